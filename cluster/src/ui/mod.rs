//! The `/cluster` page: one static HTML file with its script, embedded in the binary (no build
//! step, no npm). It reads the cluster API of the coordinator that served it, every second.

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::IntoResponse;

const PAGE: &str = include_str!("cluster.html");

pub async fn page() -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
}
