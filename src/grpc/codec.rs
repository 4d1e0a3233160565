//! The protobuf codecs of the leadpipe services.
//!
//! [`LeanCodec`] is tonic's prost codec with a small initial encode buffer. tonic gives each
//! response body an 8 KiB encode buffer when the call starts and keeps it for the life of the
//! call. For a `WatchStageChanges` stream that sits idle for hours that buffer was the largest
//! part of the stream's memory, while a stage-change event encodes to a few hundred bytes.
//! Starting at 1 KiB, the buffer still grows to fit a larger reply (a ListLeads page), once per
//! call.
//!
//! [`PassThroughCodec`] sends messages that are already encoded: the watch streams encode each
//! event once and every stream writes the same bytes (`grpc/watch.rs`).

use std::marker::PhantomData;

use bytes::{BufMut, Bytes};
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};
use tonic_prost::{ProstDecoder, ProstEncoder};

const ENCODE_BUFFER_BYTES: usize = 1024;
/// tonic's default: how much a streaming body encodes before it yields to the runtime.
const YIELD_THRESHOLD_BYTES: usize = 32 * 1024;

fn encode_buffer() -> BufferSettings {
    BufferSettings::new(ENCODE_BUFFER_BYTES, YIELD_THRESHOLD_BYTES)
}

#[derive(Debug, Clone, Copy)]
pub struct LeanCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for LeanCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for LeanCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(encode_buffer())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(BufferSettings::default())
    }
}

/// Sends each response as the protobuf encoding it already is, and decodes requests of type
/// `U` with prost. The bytes must be a valid encoding of the method's response message: the
/// wire is then the same as if that message had been encoded per call, compression and
/// message-size limits included, since tonic applies both to whatever the encoder writes.
#[derive(Debug, Clone, Copy)]
pub struct PassThroughCodec<U>(PhantomData<U>);

impl<U> Default for PassThroughCodec<U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<U> Codec for PassThroughCodec<U>
where
    U: prost::Message + Default + Send + 'static,
{
    type Encode = Bytes;
    type Decode = U;
    type Encoder = PassThroughEncoder;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        PassThroughEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(BufferSettings::default())
    }
}

#[derive(Debug, Clone, Copy)]
pub struct PassThroughEncoder;

impl Encoder for PassThroughEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        encode_buffer()
    }
}
