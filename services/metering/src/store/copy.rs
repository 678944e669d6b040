//! Postgres binary `COPY ... FROM STDIN (FORMAT binary)`: the encoding of rows and the one call that
//! sends them. The events writer and the rollup deltas both append this way.
use sqlx::postgres::PgConnection;

use crate::error::MeteringError;

/// The `COPY` binary header: signature, flags, header-extension length.
const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// Bytes handed to the server a `CopyData` message.
const COPY_CHUNK: usize = 1 << 20;

/// `COPY ... FROM STDIN (FORMAT binary)` data being written.
pub(crate) struct CopyData(Vec<u8>);

impl CopyData {
    pub(crate) fn new(capacity: usize) -> CopyData {
        let mut b = Vec::with_capacity(COPY_HEADER.len() + 2 + capacity);
        b.extend_from_slice(COPY_HEADER);
        CopyData(b)
    }
    /// Starts a row of `fields` values.
    pub(crate) fn row(&mut self, fields: i16) {
        self.0.extend_from_slice(&fields.to_be_bytes());
    }
    pub(crate) fn text(&mut self, t: &str) -> Result<(), MeteringError> {
        let len = i32::try_from(t.len()).map_err(|_| MeteringError::TextTooLong(t.len()))?;
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(t.as_bytes());
        Ok(())
    }
    pub(crate) fn int(&mut self, i: i64) {
        self.0.extend_from_slice(&8i32.to_be_bytes());
        self.0.extend_from_slice(&i.to_be_bytes());
    }
    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.0.extend_from_slice(&(-1i16).to_be_bytes());
        self.0
    }
}

/// Runs `sql` (a `COPY ... FROM STDIN`) with `data`.
pub(crate) async fn copy_in(
    conn: &mut PgConnection,
    sql: &str,
    data: Vec<u8>,
) -> Result<(), MeteringError> {
    let mut copy = conn.copy_in_raw(sql).await?;
    for chunk in data.chunks(COPY_CHUNK) {
        copy.send(chunk).await?;
    }
    copy.finish().await?;
    Ok(())
}
