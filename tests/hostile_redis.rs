//! A Redis peer that misbehaves cannot make a snapshot hold unbounded memory or run
//! forever: a fake server on loopback (a real one would never do these) answers the
//! replication handshake with a huge aux section, aux fields without end, endless keepalives,
//! a line without end, ever new databases, or silence. Each case ends in bounded time with a
//! reason that names what happened, and the heap never grows with what the peer sends: a
//! counting allocator measures its peak.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use titan_dr::redis::{RedisTarget, SnapshotError, SnapshotOptions, snapshot_to};

/// Counts the bytes allocated now and their peak, for every thread of this binary.
struct Counting;

static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = NOW.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        NOW.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// One case at a time, so that the peak is this case's alone. (A failing case's backtrace
/// is symbolised on its own thread and allocates much: read the first failure.)
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The heap a snapshot may use whatever the peer sends: its buffers are about 1 MiB.
const HEAP_BOUND: usize = 8 << 20;

/// What the fake server does once the client has asked for a full sync.
#[derive(Clone, Copy)]
enum Peer {
    /// Never answers anything.
    Silent,
    /// Answers the handshake, then sends a keepalive newline every 20 ms, forever.
    Keepalives,
    /// Answers the first command with a line that never ends.
    EndlessLine,
    /// A valid diskless RDB whose one aux value is `n` bytes long.
    HugeAux(u64),
    /// A diskless RDB of aux fields, each with a new key, without end.
    EndlessAux,
    /// A diskless RDB that selects a new database for every key, without end.
    EndlessDatabases,
    /// Announces a 1 GB RDB, sends its header and goes silent.
    AnnouncesMoreThanItSends,
}

const MARK: [u8; 40] = [b'M'; 40];

/// Serves one connection as `peer` does, until the client goes away.
fn serve(peer: Peer) -> (String, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        // Bounded in time whatever the client does.
        stream
            .set_write_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        // A write fails once the client has given up: that ends the case.
        let _ = act(peer, stream);
    });
    (address, server)
}

fn act(peer: Peer, stream: TcpStream) -> io::Result<()> {
    let mut commands = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    if let Peer::Silent = peer {
        // Until the client closes the connection.
        return io::copy(&mut commands, &mut io::sink()).map(drop);
    }
    if let Peer::EndlessLine = peer {
        command(&mut commands)?;
        out.write_all(b"+")?;
        return endless(&mut out, |chunk, _| chunk.fill(b'a'));
    }
    // REPLCONF capa, REPLCONF rdb-only, PSYNC.
    for _ in 0..2 {
        command(&mut commands)?;
        out.write_all(b"+OK\r\n")?;
    }
    command(&mut commands)?;
    out.write_all(b"+FULLRESYNC 0123456789012345678901234567890123456789 0\r\n")?;
    match peer {
        Peer::Keepalives => loop {
            out.write_all(b"\n")?;
            std::thread::sleep(Duration::from_millis(20));
        },
        Peer::HugeAux(n) => {
            eof_payload(&mut out)?;
            out.write_all(&[0xFA, 3, b'b', b'i', b'g', 0x81])?;
            out.write_all(&n.to_be_bytes())?;
            let chunk = vec![b'x'; 64 * 1024];
            let mut left = n;
            while left > 0 {
                let take = left.min(chunk.len() as u64) as usize;
                out.write_all(&chunk[..take])?;
                left -= take as u64;
            }
            // The end, a trailer of zeros (no checksum) and the mark.
            out.write_all(&[0xFF, 0, 0, 0, 0, 0, 0, 0, 0])?;
            out.write_all(&MARK)
        }
        Peer::EndlessAux => {
            eof_payload(&mut out)?;
            endless(&mut out, |chunk, n| {
                // 16-byte fields: aux, a 10-character key, a 3-character value.
                for (i, field) in chunk.chunks_exact_mut(16).enumerate() {
                    let key = format!("k{:09}", n * 4096 + i as u64);
                    field[..2].copy_from_slice(&[0xFA, 10]);
                    field[2..12].copy_from_slice(key.as_bytes());
                    field[12..].copy_from_slice(&[3, b'v', b'a', b'l']);
                }
            })
        }
        Peer::EndlessDatabases => {
            eof_payload(&mut out)?;
            endless(&mut out, |chunk, n| {
                // SELECTDB <14-bit number>, then a string key "k" with value "v".
                for (i, entry) in chunk.chunks_exact_mut(8).enumerate() {
                    let db = ((n * 8192 + i as u64) % 16000) as u16 | 0x4000;
                    entry[0] = 0xFE;
                    entry[1..3].copy_from_slice(&db.to_be_bytes());
                    entry[3..].copy_from_slice(&[0, 1, b'k', 1, b'v']);
                }
            })
        }
        Peer::AnnouncesMoreThanItSends => {
            out.write_all(b"$1000000000\r\nREDIS0011")?;
            io::copy(&mut commands, &mut io::sink()).map(drop)
        }
        Peer::Silent | Peer::EndlessLine => unreachable!(),
    }
}

/// The start of a diskless payload: its end mark, then the RDB's header.
fn eof_payload(out: &mut TcpStream) -> io::Result<()> {
    out.write_all(b"$EOF:")?;
    out.write_all(&MARK)?;
    out.write_all(b"\r\nREDIS0011")
}

/// Reads one RESP command (an array of bulk strings).
fn command(input: &mut BufReader<TcpStream>) -> io::Result<()> {
    let mut line = String::new();
    input.read_line(&mut line)?;
    let parts: usize = line.trim_start_matches('*').trim().parse().unwrap_or(0);
    for _ in 0..parts {
        line.clear();
        input.read_line(&mut line)?;
        let len: u64 = line.trim_start_matches('$').trim().parse().unwrap_or(0);
        io::copy(&mut input.take(len + 2), &mut io::sink())?;
    }
    Ok(())
}

/// Writes 64 KiB chunks filled by `fill(chunk, index)` until a write fails.
fn endless(out: &mut TcpStream, fill: impl Fn(&mut [u8], u64)) -> io::Result<()> {
    let mut chunk = vec![0u8; 64 * 1024];
    for n in 0.. {
        fill(&mut chunk, n);
        out.write_all(&chunk)?;
    }
    Ok(())
}

/// A destination that keeps nothing: what the snapshot writes is only counted.
#[derive(Default)]
struct Count(u64);

impl Write for Count {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Outcome {
    result: Result<titan_dr::redis::rdb::RdbInfo, SnapshotError>,
    took: Duration,
    written: u64,
    peak_heap: usize,
}

/// Snapshots the fake server, with a 1 s silence timeout and a 3 s deadline.
fn snapshot(peer: Peer) -> Outcome {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (address, server) = serve(peer);
    let options = SnapshotOptions {
        io_timeout: Duration::from_secs(1),
        deadline: Duration::from_secs(3),
        ..SnapshotOptions::default()
    };
    let target = RedisTarget {
        address,
        ..RedisTarget::default()
    };
    // On a thread, so a snapshot that never returns fails the case instead of hanging it.
    let (done, outcome) = std::sync::mpsc::channel();
    let baseline = NOW.load(Ordering::Relaxed);
    PEAK.store(baseline, Ordering::Relaxed);
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut sink = Count::default();
        let result = snapshot_to(&target, &options, &mut sink).map(|s| s.info);
        let _ = done.send((result, started.elapsed(), sink.0));
    });
    let (result, took, written) = outcome
        .recv_timeout(Duration::from_secs(30))
        .expect("the snapshot returns within 30 s");
    let peak_heap = PEAK.load(Ordering::Relaxed).saturating_sub(baseline);
    server.join().unwrap();
    eprintln!(
        "{:?} after {took:?}, {written} bytes written, peak heap {peak_heap} bytes",
        result.as_ref().map(|_| "ok").map_err(ToString::to_string)
    );
    Outcome {
        result,
        took,
        written,
        peak_heap,
    }
}

fn bounded(outcome: &Outcome) {
    assert!(
        outcome.peak_heap < HEAP_BOUND,
        "peak heap {} bytes",
        outcome.peak_heap
    );
    // The deadline (3 s) plus at most one silence timeout (1 s).
    assert!(outcome.took < Duration::from_secs(5), "{:?}", outcome.took);
}

#[test]
fn a_huge_aux_value_is_streamed_past_never_held() {
    let size = 64 << 20;
    let outcome = snapshot(Peer::HugeAux(size));
    let info = outcome.result.as_ref().expect("a valid RDB is accepted");
    assert!(!info.aux.contains_key("big"), "{:?}", info.aux);
    assert!(outcome.written > size, "{} bytes", outcome.written);
    bounded(&outcome);
}

#[test]
fn aux_fields_without_end_stop_at_the_deadline_holding_a_bounded_few() {
    let outcome = snapshot(Peer::EndlessAux);
    let error = outcome.result.as_ref().expect_err("refused");
    assert!(
        matches!(error, SnapshotError::PastDeadline { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("deadline of 3s"), "{error}");
    // More than the heap bound went through (a debug build scans about 9 MB/s).
    assert!(
        outcome.written > 2 * HEAP_BOUND as u64,
        "{}",
        outcome.written
    );
    bounded(&outcome);
}

#[test]
fn keepalives_without_end_stop_at_the_deadline() {
    let outcome = snapshot(Peer::Keepalives);
    let error = outcome.result.as_ref().expect_err("refused");
    assert!(
        matches!(error, SnapshotError::PastDeadline { received: 0, .. }),
        "{error}"
    );
    bounded(&outcome);
}

#[test]
fn a_line_without_end_is_no_redis_server() {
    let outcome = snapshot(Peer::EndlessLine);
    let error = outcome.result.as_ref().expect_err("refused");
    assert!(
        error.to_string().contains("longer than 4096 bytes"),
        "{error}"
    );
    bounded(&outcome);
}

#[test]
fn ever_new_databases_are_refused_once_past_the_limit() {
    let outcome = snapshot(Peer::EndlessDatabases);
    let error = outcome.result.as_ref().expect_err("refused");
    assert!(
        error.to_string().contains("more than 4096 databases"),
        "{error}"
    );
    bounded(&outcome);
}

#[test]
fn silence_fails_after_the_timeout_naming_it() {
    let outcome = snapshot(Peer::Silent);
    let error = outcome.result.as_ref().expect_err("refused");
    assert!(matches!(error, SnapshotError::Timeout { .. }), "{error}");
    assert!(error.to_string().contains("went silent"), "{error}");
    bounded(&outcome);

    let outcome = snapshot(Peer::AnnouncesMoreThanItSends);
    let error = outcome.result.as_ref().expect_err("refused");
    assert!(
        matches!(error, SnapshotError::Timeout { received: 9, .. }),
        "{error}"
    );
    bounded(&outcome);
}
