//! The server's codec: prost's, with each call's buffers sized for KEDA's messages.
//!
//! tonic's default gives every call an 8 KiB buffer each way (`BufferSettings::default`),
//! allocated and freed per call — past the allocator's per-thread cache, so the largest
//! allocation of a cache-hit `GetMetrics`. KEDA's requests are hundreds of bytes (the trigger
//! metadata) and the answers tens. A larger message grows the buffer as it always does in
//! tonic (`StreamingInner` reserves the announced length, `EncodeBuf` grows as written), so
//! only the first allocation's size changes; the size limits are the server's, unchanged.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// The first size of a call's buffers, each way: within glibc's per-thread cache (1,032 B).
pub const BUFFER_SIZE: usize = 1024;

/// tonic's own threshold for yielding a streamed response's encoded bytes.
const YIELD_THRESHOLD: usize = 32 * 1024;

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD)
}

/// `tonic_prost::ProstCodec` with [`BUFFER_SIZE`] buffers; the generated server's codec
/// (`build.rs`, `codec_path`).
#[derive(Debug, Clone)]
pub struct KedaCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for KedaCodec<T, U> {
    fn default() -> Self {
        KedaCodec(PhantomData)
    }
}

impl<T, U> Codec for KedaCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(settings())
    }
}
