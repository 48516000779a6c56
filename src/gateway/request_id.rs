//! The id that ties a call's logs, spans, metadata and error details together.

use std::fmt;

use tonic::metadata::{AsciiMetadataValue, MetadataMap};

/// The metadata that carries the request id, both ways.
pub const REQUEST_ID: &str = "x-request-id";

/// The caller's `x-request-id` when it is a sane token, else a fresh random one.
#[derive(Debug, Clone)]
pub struct RequestId(String);

impl RequestId {
    /// Reads or mints the id.
    pub fn from_metadata(metadata: &MetadataMap) -> RequestId {
        let supplied = metadata
            .get(REQUEST_ID)
            .and_then(|value| value.to_str().ok())
            .filter(|id| {
                !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
            });
        match supplied {
            Some(id) => RequestId(id.to_string()),
            None => RequestId(format!("{:032x}", rand::random::<u128>())),
        }
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as metadata.
    pub fn to_metadata(&self) -> AsciiMetadataValue {
        // Only visible ASCII gets here (checked or minted), which is always a valid value.
        AsciiMetadataValue::try_from(self.0.as_str())
            .unwrap_or_else(|_| AsciiMetadataValue::from_static("invalid"))
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
