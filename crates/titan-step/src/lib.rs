//! titan-step: the entrypoint of every step container of titan-dr, and the one definition of
//! the output tail that `expect` judges.
//!
//! A step's image may hold no shell, so nothing of the step may depend on one: an init
//! container copies this (static) binary into a shared volume (`titan-step install`), and the
//! step's container runs its program through it (`titan-step run -- PROGRAM ARGS...`), the way
//! Argo's emissary and Tekton's entrypoint do. It sends stdout and stderr through one pipe,
//! copies them to its own stdout for the pod log, and writes the tail as the termination
//! message, where the operator reads it.
//!
//! The local executor of titan-dr keeps its output with the same [`Tail`] and
//! [`OUTPUT_TAIL_BYTES`], so an `outputContains` that passes on a laptop passes in the cluster.

pub mod cli;
pub mod run;

use std::collections::VecDeque;
use std::io;

/// Bytes of output kept as the tail: what `expect` sees, locally and in the cluster.
///
/// The kubelet keeps at most 4096 bytes of a termination-message file (the last ones), and
/// its status manager trims each container's message to 12 KiB divided by the pod's
/// containers and init containers (6 KiB for a step pod: the init container and the step).
/// 4000 stays under both with room to spare (up to three containers), so the kubelet never
/// cuts what titan-step wrote and the operator reads exactly the text the local executor
/// judges.
pub const OUTPUT_TAIL_BYTES: usize = 4000;

/// The last bytes of a stream, at most `capacity` of them.
#[derive(Debug, Clone)]
pub struct Tail {
    kept: VecDeque<u8>,
    capacity: usize,
    /// Whether bytes were dropped from the front: the kept ones may then start inside a
    /// character.
    cut: bool,
}

impl Tail {
    pub fn new(capacity: usize) -> Tail {
        Tail {
            kept: VecDeque::with_capacity(capacity.min(64 * 1024)),
            capacity,
            cut: false,
        }
    }

    /// Appends bytes of the stream, dropping the oldest beyond the capacity.
    pub fn push(&mut self, data: &[u8]) {
        if data.len() >= self.capacity {
            self.cut |= !self.kept.is_empty() || data.len() > self.capacity;
            self.kept.clear();
            self.kept.extend(&data[data.len() - self.capacity..]);
            return;
        }
        self.kept.extend(data);
        let excess = self.kept.len().saturating_sub(self.capacity);
        if excess > 0 {
            self.kept.drain(..excess);
            self.cut = true;
        }
    }

    /// The kept bytes as text: a character cut at the front is dropped, anything else that is
    /// not UTF-8 becomes U+FFFD. Never longer than the capacity, in bytes, even when
    /// replacement characters (three bytes each) stand for single bytes.
    pub fn text(&self) -> String {
        let (front, back) = self.kept.as_slices();
        let bytes = [front, back].concat();
        // A UTF-8 character has at most three continuation bytes after its first.
        let skip = if self.cut {
            bytes
                .iter()
                .take(3)
                .take_while(|&&b| b & 0xC0 == 0x80)
                .count()
        } else {
            0
        };
        let text = String::from_utf8_lossy(&bytes[skip..]);
        if text.len() <= self.capacity {
            return text.into_owned();
        }
        let mut start = text.len() - self.capacity;
        while !text.is_char_boundary(start) {
            start += 1;
        }
        text[start..].to_owned()
    }
}

impl io::Write for Tail {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The tail of a whole output, as [`Tail::text`] gives it.
pub fn tail_text(output: &[u8], capacity: usize) -> String {
    let mut tail = Tail::new(capacity);
    tail.push(output);
    tail.text()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_output_is_kept_whole() {
        assert_eq!(tail_text(b"PONG\n", 10), "PONG\n");
        assert_eq!(tail_text(b"", 10), "");
    }

    #[test]
    fn only_the_last_bytes_are_kept_however_they_arrive() {
        let whole = tail_text(b"0123456789abcdef", 6);
        assert_eq!(whole, "abcdef");
        let mut tail = Tail::new(6);
        for chunk in [&b"0123"[..], b"45678", b"9a", b"bcdef"] {
            tail.push(chunk);
        }
        assert_eq!(tail.text(), whole);
        let mut bytewise = Tail::new(6);
        b"0123456789abcdef"
            .iter()
            .for_each(|b| bytewise.push(&[*b]));
        assert_eq!(bytewise.text(), whole);
    }

    #[test]
    fn a_character_cut_at_the_front_is_dropped() {
        // "é" is two bytes, "€" three: keeping 4 bytes of "a€é" starts inside the "€".
        assert_eq!(tail_text("a€é".as_bytes(), 4), "é");
        assert_eq!(tail_text("a€é".as_bytes(), 5), "€é");
        let mut tail = Tail::new(3);
        tail.push("€".as_bytes());
        tail.push("é".as_bytes());
        assert_eq!(tail.text(), "é");
    }

    #[test]
    fn invalid_bytes_are_replaced_within_the_capacity() {
        // Not cut: a leading continuation byte is invalid, not a cut character.
        assert_eq!(tail_text(b"\x80ok", 10), "\u{fffd}ok");
        let text = tail_text(&[0xff; 10], 10);
        assert!(text.len() <= 10, "{} bytes", text.len());
        assert!(text.chars().all(|c| c == '\u{fffd}'));
        assert_eq!(text.chars().count(), 3);
    }

    #[test]
    fn the_capacity_fits_a_termination_message() {
        const { assert!(OUTPUT_TAIL_BYTES <= 4096 && OUTPUT_TAIL_BYTES <= 12 * 1024 / 3) }
        let text = tail_text(&[b'x'; 10_000], OUTPUT_TAIL_BYTES);
        assert_eq!(text.len(), OUTPUT_TAIL_BYTES);
    }
}
