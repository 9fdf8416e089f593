//! `CartService.ExecuteStream`: what a unary call keeps outside its message carried inside the
//! stream's messages, the same on both ends. A call's metadata is a map built and read as
//! such (`shared::headers::CallMetadata`); here are a call's status (with its metadata) and
//! its result.

use std::collections::HashMap;

use tonic::metadata::{KeyAndValueRef, MetadataKey, MetadataMap, MetadataValue};

use crate::cart::v1 as pb;

/// The ASCII entries of `md` (binary entries are not part of this API and are left out).
pub fn metadata_to_map(md: &MetadataMap) -> HashMap<String, String> {
    md.iter()
        .filter_map(|kv| match kv {
            KeyAndValueRef::Ascii(k, v) => {
                Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned()))
            }
            KeyAndValueRef::Binary(..) => None,
        })
        .collect()
}

/// The inverse of [`metadata_to_map`]. An entry that is not a valid ASCII header is dropped,
/// as a gRPC server would never have seen it.
fn map_to_metadata(map: HashMap<String, String>) -> MetadataMap {
    let mut md = MetadataMap::with_capacity(map.len());
    for (k, v) in map {
        if let (Ok(k), Ok(v)) = (
            MetadataKey::from_bytes(k.as_bytes()),
            MetadataValue::try_from(v.as_str()),
        ) {
            md.insert(k, v);
        }
    }
    md
}

/// A status as a call's error outcome.
pub fn status_to_call(status: &tonic::Status) -> pb::CallStatus {
    pb::CallStatus {
        code: status.code() as i32,
        message: status.message().to_owned(),
        metadata: metadata_to_map(status.metadata()),
    }
}

/// The status a unary call would have returned.
pub fn call_to_status(call: pb::CallStatus) -> tonic::Status {
    tonic::Status::with_metadata(
        tonic::Code::from(call.code),
        call.message,
        map_to_metadata(call.metadata),
    )
}

/// The result message of call `call_id`.
pub fn result(
    call_id: u64,
    outcome: Result<pb::ExecuteResponse, tonic::Status>,
) -> pb::ExecuteCallResult {
    pb::ExecuteCallResult {
        call_id,
        outcome: Some(match outcome {
            Ok(r) => pb::execute_call_result::Outcome::Ok(r),
            Err(s) => pb::execute_call_result::Outcome::Error(status_to_call(&s)),
        }),
    }
}

/// What a unary call would have returned; a result without an outcome is the peer's bug.
pub fn outcome(result: pb::ExecuteCallResult) -> Result<pb::ExecuteResponse, tonic::Status> {
    match result.outcome {
        Some(pb::execute_call_result::Outcome::Ok(r)) => Ok(r),
        Some(pb::execute_call_result::Outcome::Error(s)) => Err(call_to_status(s)),
        None => Err(tonic::Status::internal(
            "the node sent a call result without an outcome",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_crosses_the_stream_unchanged() {
        let sent = shared::ApiError::not_owner("10.0.0.2:50051")
            .with_retry_after(std::time::Duration::from_secs(3))
            .to_status();
        let got = outcome(result(9, Err(sent.clone()))).unwrap_err();
        assert_eq!(got.code(), sent.code());
        assert_eq!(got.message(), sent.message());
        let back = shared::ApiError::from_status(&got);
        assert_eq!(back.code, shared::ErrorCode::NotOwner);
        assert_eq!(back.owner_addr.as_deref(), Some("10.0.0.2:50051"));
        assert_eq!(back.retry_after, Some(std::time::Duration::from_secs(3)));
    }

    #[test]
    fn metadata_round_trips_and_drops_what_no_header_could_be() {
        let mut map = HashMap::new();
        map.insert("x-tenant-id".to_owned(), "acme".to_owned());
        map.insert("traceparent".to_owned(), "00-ab-cd-01".to_owned());
        map.insert("Bad Key".to_owned(), "v".to_owned());
        map.insert("x-bad-value".to_owned(), "line\nbreak".to_owned());
        let md = map_to_metadata(map);
        let back = metadata_to_map(&md);
        assert_eq!(back.len(), 2, "{back:?}");
        assert_eq!(back["x-tenant-id"], "acme");
        assert_eq!(back["traceparent"], "00-ab-cd-01");
    }

    #[test]
    fn a_result_without_an_outcome_is_an_error_not_a_panic() {
        let got = outcome(pb::ExecuteCallResult {
            call_id: 1,
            outcome: None,
        });
        assert_eq!(got.unwrap_err().code(), tonic::Code::Internal);
    }
}
