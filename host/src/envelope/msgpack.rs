//! JSON values to msgpack, encoded the way Python's `msgpack.packb` does:
//! the smallest integer form, floats as float64, `str8` for short strings
//! (`use_bin_type=True`), maps in insertion order.

use std::io;

use rmp::encode::{self, ValueWriteError};
use serde_json::Value;

fn io_error(error: ValueWriteError<io::Error>) -> io::Error {
    match error {
        ValueWriteError::InvalidMarkerWrite(e) | ValueWriteError::InvalidDataWrite(e) => e,
    }
}

fn length(len: usize) -> io::Result<u32> {
    u32::try_from(len).map_err(|_| io::Error::other("value too long for msgpack"))
}

pub(super) fn write_map_len(out: &mut Vec<u8>, len: usize) -> io::Result<()> {
    encode::write_map_len(out, length(len)?).map_err(io_error)?;
    Ok(())
}

pub(super) fn write_str(out: &mut Vec<u8>, text: &str) -> io::Result<()> {
    encode::write_str(out, text).map_err(io_error)
}

pub(super) fn write_uint(out: &mut Vec<u8>, n: u64) -> io::Result<()> {
    encode::write_uint(out, n).map_err(io_error)?;
    Ok(())
}

pub(super) fn write_value(out: &mut Vec<u8>, value: &Value) -> io::Result<()> {
    match value {
        Value::Null => encode::write_nil(out)?,
        Value::Bool(b) => encode::write_bool(out, *b)?,
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                write_uint(out, u)?;
            } else if let Some(i) = n.as_i64() {
                encode::write_sint(out, i).map_err(io_error)?;
            } else if let Some(f) = n.as_f64() {
                encode::write_f64(out, f).map_err(io_error)?;
            } else {
                return Err(io::Error::other(format!("number {n} has no msgpack form")));
            }
        }
        Value::String(s) => write_str(out, s)?,
        Value::Array(items) => {
            encode::write_array_len(out, length(items.len())?).map_err(io_error)?;
            for item in items {
                write_value(out, item)?;
            }
        }
        Value::Object(map) => {
            write_map_len(out, map.len())?;
            for (key, item) in map {
                write_str(out, key)?;
                write_value(out, item)?;
            }
        }
    }
    Ok(())
}
