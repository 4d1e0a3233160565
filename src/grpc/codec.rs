//! The protobuf codec for every leadpipe service: tonic's prost codec with a small initial
//! encode buffer.
//!
//! tonic gives each response body an 8 KiB encode buffer when the call starts and keeps it for
//! the life of the call. For a `WatchStageChanges` stream that sits idle for hours that buffer was
//! the largest part of the stream's memory, while a stage-change event encodes to a few hundred
//! bytes. Starting at 1 KiB, the buffer still grows to fit a larger reply (a ListLeads page),
//! once per call.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

const ENCODE_BUFFER_BYTES: usize = 1024;
/// tonic's default: how much a streaming body encodes before it yields to the runtime.
const YIELD_THRESHOLD_BYTES: usize = 32 * 1024;

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
        ProstEncoder::new(BufferSettings::new(
            ENCODE_BUFFER_BYTES,
            YIELD_THRESHOLD_BYTES,
        ))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(BufferSettings::default())
    }
}
