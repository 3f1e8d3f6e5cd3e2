//! The node image's build context: `docker/Dockerfile` (`FROM scratch`, `COPY rootfs/ /`) and a
//! root file system holding the `cluster` binary and the shared objects it loads, each at the
//! path the dynamic loader looks for it. So the image reuses the normal host build of the
//! binary: no second, statically linked build of every dependency (that build took 12 min on a
//! fresh clone with 2 busy cores, more than the whole rest of the first run). A statically linked
//! binary (`--image-bin`) works too: it loads nothing, so its root file system is the binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// The Dockerfile the image is built from (the same file users build with).
pub const DOCKERFILE: &str = include_str!("../../../docker/Dockerfile");

/// A file of the image: where it goes (absolute, inside the image) and its bytes.
pub struct Entry {
    pub path: String,
    pub data: Vec<u8>,
    pub mode: u32,
}

/// The binary at `/cluster` and every shared object `ldd` resolves for it, at its own path
/// (the loader's path is written in the binary, the libraries' in the loader's search path).
pub fn root_fs(bin: &Path) -> anyhow::Result<Vec<Entry>> {
    let data = std::fs::read(bin).with_context(|| format!("read {}", bin.display()))?;
    let mut entries = vec![Entry {
        path: "/cluster".into(),
        data,
        mode: 0o755,
    }];
    for lib in shared_objects(bin)? {
        let data = std::fs::read(&lib).with_context(|| format!("read {}", lib.display()))?;
        entries.push(Entry {
            path: lib.to_string_lossy().into_owned(),
            data,
            mode: 0o755,
        });
    }
    Ok(entries)
}

/// The shared objects the binary loads, from `ldd` (glibc's, always on a glibc host). A static
/// binary has none.
fn shared_objects(bin: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .context("run ldd (Debian package libc-bin) to list the cluster binary's shared objects")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // ldd exits 1 for "not a dynamic executable": a static binary needs nothing more.
        let err = String::from_utf8_lossy(&out.stderr);
        if text.contains("not a dynamic executable") || err.contains("not a dynamic executable") {
            return Ok(vec![]);
        }
        bail!("ldd {} failed: {}", bin.display(), err.trim());
    }
    parse_ldd(&text)
}

/// `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` and `/lib64/ld-linux-x86-64.so.2 (0x…)`
/// give a path; the kernel's `linux-vdso.so.1 (0x…)` is no file. A library ldd cannot find
/// is an error (the node would not start in the image).
pub fn parse_ldd(text: &str) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains("statically linked") {
            continue;
        }
        let path = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    bail!("ldd: {} not found on this host", name.trim());
                }
                rest.split_whitespace().next().unwrap_or_default()
            }
            None => line.split_whitespace().next().unwrap_or_default(),
        };
        if path.starts_with('/') {
            out.push(PathBuf::from(path));
        }
    }
    Ok(out)
}

/// The build context as a tar: the Dockerfile and `rootfs/…`.
pub fn context(entries: &[Entry]) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8], mode: u32| -> std::io::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_cksum();
        tar.append_data(&mut header, name, data)
    };
    add("Dockerfile", DOCKERFILE.as_bytes(), 0o644)?;
    for e in entries {
        add(&format!("rootfs{}", e.path), &e.data, e.mode)?;
    }
    tar.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_lines_give_the_loader_and_the_libraries_not_the_vdso() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd5a1f5000)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f1)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f3)\n";
        let paths = parse_ldd(text).unwrap();
        assert_eq!(
            paths,
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        let missing = parse_ldd("\tlibfoo.so.1 => not found\n").unwrap_err();
        assert!(
            missing.to_string().contains("libfoo.so.1 not found"),
            "{missing}"
        );
    }

    #[test]
    fn the_harness_own_binary_gets_its_loader_and_libc() {
        // The test binary is linked like the cluster binary (same toolchain, same host).
        let exe = std::env::current_exe().unwrap();
        let entries = root_fs(&exe).unwrap();
        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths[0], "/cluster");
        assert!(paths.iter().any(|p| p.contains("ld-linux")), "{paths:?}");
        assert!(paths.iter().any(|p| p.ends_with("/libc.so.6")), "{paths:?}");
        let tar = context(&entries).unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names[0], "Dockerfile");
        assert!(names.contains(&"rootfs/cluster".to_string()), "{names:?}");
    }
}
