//! What a coordinator does with a request body before it touches any state: the `ApiJson`
//! extraction (a 400 `{error, code}` with the position for malformed JSON or a missing field)
//! and, for a pipeline group, the VPL check. One entry per route that takes a body, so fuzzing
//! (`fuzz/`, target `api_bodies`) reaches exactly the code a request reaches.

use axum::body::Body;
use axum::extract::FromRequest;
use axum::http::{header, Request};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::de::DeserializeOwned;

use super::detector::AliveReport;
use super::error::ApiJson;
use super::AppError;
use crate::api::model::{
    Connector, GroupDef, HeartbeatBody, MigrateRequest, RegisterWorker, WsMessage,
};
use crate::raft::{Proposal, TypeConfig};

/// The routes that take a body (the WebSocket's text frames included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyRoute {
    Register,
    Heartbeat,
    Connector,
    Deploy,
    Migrate,
    RaftAppend,
    RaftVote,
    RaftSnapshot,
    RaftForward,
    RaftAlive,
    WsFrame,
}

impl BodyRoute {
    pub const ALL: [BodyRoute; 11] = [
        BodyRoute::Register,
        BodyRoute::Heartbeat,
        BodyRoute::Connector,
        BodyRoute::Deploy,
        BodyRoute::Migrate,
        BodyRoute::RaftAppend,
        BodyRoute::RaftVote,
        BodyRoute::RaftSnapshot,
        BodyRoute::RaftForward,
        BodyRoute::RaftAlive,
        BodyRoute::WsFrame,
    ];
}

/// Extract (and for a deploy, validate) `body` as the route does. `Err` is the 4xx the client
/// would get.
pub fn check(route: BodyRoute, body: &[u8]) -> Result<(), AppError> {
    match route {
        BodyRoute::Register => extract::<RegisterWorker>(body).map(drop),
        BodyRoute::Heartbeat => extract::<HeartbeatBody>(body).map(drop),
        BodyRoute::Connector => extract::<Connector>(body).map(drop),
        BodyRoute::Deploy => super::groups::validate(&extract::<GroupDef>(body)?),
        BodyRoute::Migrate => extract::<MigrateRequest>(body).map(drop),
        BodyRoute::RaftAppend => extract::<AppendEntriesRequest<TypeConfig>>(body).map(drop),
        BodyRoute::RaftVote => extract::<VoteRequest<u64>>(body).map(drop),
        BodyRoute::RaftSnapshot => extract::<InstallSnapshotRequest<TypeConfig>>(body).map(drop),
        BodyRoute::RaftForward => extract::<Proposal>(body).map(drop),
        BodyRoute::RaftAlive => extract::<AliveReport>(body).map(drop),
        BodyRoute::WsFrame => serde_json::from_slice::<WsMessage>(body)
            .map(drop)
            .map_err(|e| AppError::bad_request("invalid_message", e.to_string())),
    }
}

fn extract<T: DeserializeOwned + Send>(body: &[u8]) -> Result<T, AppError> {
    let request = Request::builder()
        .method("POST")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_vec()))
        .map_err(|e| AppError::bad_request("invalid_request", e.to_string()))?;
    // The extractor only reads an in-memory body: it never waits on I/O.
    futures::executor::block_on(ApiJson::<T>::from_request(request, &())).map(|ApiJson(v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_json_is_a_400_with_its_position_on_every_route() {
        for route in BodyRoute::ALL {
            let err = check(route, b"{\"name\": ").unwrap_err();
            assert_eq!(err.status.as_u16(), 400, "{route:?}");
            assert!(
                err.body.error.contains("line 1"),
                "{route:?}: {}",
                err.body.error
            );
        }
    }

    #[test]
    fn a_group_with_a_bad_pipeline_is_refused_with_line_and_column() {
        let body = serde_json::json!({
            "name": "g", "routes": [],
            "pipelines": [{"name": "p", "replicas": 1,
                "source": "stream X = Y.where(temperature >>> 1)"}],
        });
        let err = check(BodyRoute::Deploy, body.to_string().as_bytes()).unwrap_err();
        assert_eq!(err.status.as_u16(), 400);
        assert!(err.body.error.contains("line 1"), "{}", err.body.error);
        let ok = serde_json::json!({
            "name": "g", "routes": [],
            "pipelines": [{"name": "p", "replicas": 1, "source":
                "event SensorReading { sensor_id: str, temperature: float, seq: int }\n\
                 stream Input = SensorReading.from(mqtt_1, topic: \"e2e/input/1\")\n\
                 stream High = Input.where(temperature > 50.0)\n\
                 stream Output = High.to(mqtt_1, topic: \"e2e/output\")"}],
        });
        check(BodyRoute::Deploy, ok.to_string().as_bytes()).unwrap();
    }
}
