//! HTTP/1.1 chunked framing: the size line before each chunk and the end of the body.
//!
//! Pure functions, with no dependency on the rest of the server.

/// The end of a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Writes `{len:x}\r\n` into `out`; returns how many bytes it used.
pub fn chunk_header(len: usize, out: &mut [u8; 18]) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut n = len;
    let mut count = 0;
    loop {
        digits[count] = HEX[n & 0xf];
        count += 1;
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    for i in 0..count {
        out[i] = digits[count - 1 - i];
    }
    out[count] = b'\r';
    out[count + 1] = b'\n';
    count + 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_chunk_sizes_in_hex() {
        let mut out = [0u8; 18];
        for (len, expected) in [
            (0, "0\r\n"),
            (9, "9\r\n"),
            (255, "ff\r\n"),
            (4096, "1000\r\n"),
        ] {
            let used = chunk_header(len, &mut out);
            assert_eq!(&out[..used], expected.as_bytes());
        }
    }
}
