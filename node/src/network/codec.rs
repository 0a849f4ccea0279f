//! Request-response codec for sealed messages: a 4-byte big-endian length, then the
//! bytes. The length is checked against the limit before anything is read, so a peer
//! cannot make us buffer more than [`MAX_RR_MESSAGE`].

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use ghmesh_protocol::wire::MAX_RR_MESSAGE;
use libp2p::StreamProtocol;

/// Versioned protocol id of ghmesh lookups and body fetches.
pub const RR_PROTOCOL: StreamProtocol = StreamProtocol::new("/ghmesh/rr/1.0.0");

/// Length-prefixed opaque bytes; sealing and meaning live in the protocol crate.
#[derive(Debug, Clone, Copy, Default)]
pub struct SealedCodec;

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_RR_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "ghmesh frame exceeds the size limit",
        ));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, data: &[u8]) -> io::Result<()> {
    if data.len() > MAX_RR_MESSAGE {
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
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io).await
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
        write_frame(io, &req).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &res).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::Cursor;

    #[tokio::test]
    async fn frames_round_trip_and_oversize_is_refused() {
        let mut buf = Cursor::new(Vec::new());
        write_frame(&mut buf, b"hello").await.unwrap();
        let mut rd = Cursor::new(buf.into_inner());
        assert_eq!(read_frame(&mut rd).await.unwrap(), b"hello");

        let mut huge = Cursor::new(((MAX_RR_MESSAGE + 1) as u32).to_be_bytes().to_vec());
        assert_eq!(
            read_frame(&mut huge).await.unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        let mut short = Cursor::new(vec![0, 0, 0, 9, 1, 2]);
        assert!(read_frame(&mut short).await.is_err());
    }
}
