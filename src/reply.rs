//! Answers as protobuf bytes, encoded once.
//!
//! The gateway's service traits return [`Encoded`] messages and are served with [`ReplyCodec`],
//! which writes those bytes to the wire as they are. An answer is encoded once, when it comes
//! from the upstream, and the cache keeps and shares the bytes: a cache hit neither clones a
//! decoded message nor encodes it again, and a cached entry costs its encoding, not the far
//! larger decoded form. On the wire nothing changes: clients decode the usual messages.

use std::{fmt, marker::PhantomData};

use bytes::{BufMut, Bytes};
use tonic::{
    Status,
    codec::{BufferSettings, Codec, EncodeBuf, Encoder},
};
use tonic_prost::ProstDecoder;

/// The protobuf encoding of one `M`. Cloning it shares the bytes.
pub struct Encoded<M> {
    bytes: Bytes,
    message: PhantomData<fn() -> M>,
}

impl<M: prost::Message> Encoded<M> {
    /// Encodes `message`.
    pub fn encode(message: &M) -> Encoded<M> {
        Encoded::from_bytes(Bytes::from(message.encode_to_vec()))
    }
}

impl<M: prost::Message + Default> Encoded<M> {
    /// Decodes the message, for callers in process (tests, benchmarks) that want it back.
    pub fn decode(&self) -> Result<M, prost::DecodeError> {
        M::decode(self.bytes.clone())
    }
}

impl<M> Encoded<M> {
    /// Bytes known to be the encoding of an `M` (the cache's, stored under an `M` route).
    pub fn from_bytes(bytes: Bytes) -> Encoded<M> {
        Encoded {
            bytes,
            message: PhantomData,
        }
    }

    /// The encoding.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The encoding, given up.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }
}

impl<M> Clone for Encoded<M> {
    fn clone(&self) -> Self {
        Encoded::from_bytes(self.bytes.clone())
    }
}

impl<M> fmt::Debug for Encoded<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Encoded<{}>({} bytes)",
            std::any::type_name::<M>(),
            self.bytes.len()
        )
    }
}

/// The generated servers' codec: requests are decoded by prost as usual, answers are
/// [`Encoded`] bytes written as they are.
pub struct ReplyCodec<E, D> {
    types: PhantomData<fn() -> (E, D)>,
}

impl<E, D> Default for ReplyCodec<E, D> {
    fn default() -> Self {
        ReplyCodec { types: PhantomData }
    }
}

impl<M, D> Codec for ReplyCodec<Encoded<M>, D>
where
    M: Send + 'static,
    D: prost::Message + Default + Send + 'static,
{
    type Encode = Encoded<M>;
    type Decode = D;
    type Encoder = EncodedWriter<M>;
    type Decoder = ProstDecoder<D>;

    fn encoder(&mut self) -> Self::Encoder {
        EncodedWriter {
            message: PhantomData,
        }
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::default()
    }
}

/// Writes [`Encoded`] answers.
pub struct EncodedWriter<M> {
    message: PhantomData<fn() -> M>,
}

impl<M> Encoder for EncodedWriter<M> {
    type Item = Encoded<M>;
    type Error = Status;

    fn encode(&mut self, item: Encoded<M>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.bytes.len());
        dst.put_slice(&item.bytes);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::PayloadStats;

    #[test]
    fn encodes_once_and_decodes_back() {
        let mut stats = PayloadStats::default();
        stats.app_file.insert("a".into(), 3.0);
        let encoded = Encoded::encode(&stats);
        assert_eq!(
            encoded.bytes().as_ref(),
            prost::Message::encode_to_vec(&stats)
        );
        assert_eq!(encoded.decode().unwrap(), stats);
        assert_eq!(encoded.clone().bytes().as_ptr(), encoded.bytes().as_ptr());
    }
}
