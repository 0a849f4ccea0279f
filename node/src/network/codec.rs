//! Request-response codec for sealed messages: a 4-byte big-endian length, then the
//! bytes. The length is checked against the protocol's limit before anything is read:
//! on the small protocol (hello, lookups, member lists) a peer cannot make us buffer
//! more than [`MAX_SMALL_FRAME`]; only body replies, on their own protocol, may be
//! larger ([`MAX_BODY_FRAME`]).

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;

use crate::limits::{MAX_BODY_FRAME, MAX_SMALL_FRAME};

/// Versioned protocol id of hellos, lookups and member lists (v2: addressed requests;
/// v3: owner leases).
pub const RR_PROTOCOL: StreamProtocol = StreamProtocol::new("/ghmesh/rr/4.0.0");
/// Versioned protocol id of body fetches by CID.
pub const BODY_PROTOCOL: StreamProtocol = StreamProtocol::new("/ghmesh/body/4.0.0");

/// Length-prefixed opaque bytes; sealing and meaning live in the protocol crate.
#[derive(Debug, Clone, Copy)]
pub struct SealedCodec {
    /// Largest request read.
    pub request_max: usize,
    /// Largest response read.
    pub response_max: usize,
}

impl SealedCodec {
    /// Hellos, lookups, member lists: small both ways.
    pub const SMALL: Self = Self {
        request_max: MAX_SMALL_FRAME,
        response_max: MAX_SMALL_FRAME,
    };
    /// Body fetches: a small request, a reply up to the largest entry.
    pub const BODY: Self = Self {
        request_max: MAX_SMALL_FRAME,
        response_max: MAX_BODY_FRAME,
    };
}

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T, max: usize) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "ghmesh frame exceeds the size limit",
        ));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    data: &[u8],
    max: usize,
) -> io::Result<()> {
    if data.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "ghmesh frame exceeds the size limit",
        ));
    }
    io.write_all(&(data.len() as u32).to_be_bytes()).await?;
    io.write_all(data).await?;
    io.close().await
}

impl libp2p::request_response::Codec for SealedCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    /// Shared: a sealed body reply is sent to every member that pulls it, uncopied.
    type Response = bytes::Bytes;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.request_max).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<bytes::Bytes>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.response_max)
            .await
            .map(bytes::Bytes::from)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &req, self.request_max).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: bytes::Bytes,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &res, self.response_max).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::Cursor;

    #[tokio::test]
    async fn frames_round_trip_and_oversize_is_refused() {
        let mut buf = Cursor::new(Vec::new());
        write_frame(&mut buf, b"hello", 5).await.unwrap();
        let mut rd = Cursor::new(buf.into_inner());
        assert_eq!(read_frame(&mut rd, 5).await.unwrap(), b"hello");
        assert!(write_frame(&mut Cursor::new(Vec::new()), b"hello", 4)
            .await
            .is_err());

        for max in [MAX_SMALL_FRAME, MAX_BODY_FRAME] {
            let mut huge = Cursor::new(((max + 1) as u32).to_be_bytes().to_vec());
            assert_eq!(
                read_frame(&mut huge, max).await.unwrap_err().kind(),
                io::ErrorKind::InvalidData
            );
        }
        // A body-sized frame is refused on the small protocol before it is buffered.
        let mut big = Cursor::new(((MAX_SMALL_FRAME + 1) as u32).to_be_bytes().to_vec());
        assert!(read_frame(&mut big, SealedCodec::SMALL.request_max)
            .await
            .is_err());
        let mut short = Cursor::new(vec![0, 0, 0, 9, 1, 2]);
        assert!(read_frame(&mut short, 16).await.is_err());
    }
}
