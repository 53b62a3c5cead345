//! The admin port while the engine starts: sled's recovery of a large journal (and the embedded
//! CDR's) can take a while, and until then the real admin server cannot run. Meanwhile this tiny
//! responder answers `/health` 200 (the process is alive: a liveness probe must not kill it
//! mid-recovery) and everything else 503 with `"journal": "opening"` (not ready yet).
//! Plain HTTP only: with TLS on the admin port it is not started, and probes fail until the real
//! server is up (not ready either way).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Answers probes until [`Starting::stop`] (or drop), then frees the port.
pub struct Starting {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    addr: SocketAddr,
}

impl Starting {
    /// Binds `addr` and answers on a thread of its own.
    pub fn start(addr: SocketAddr) -> std::io::Result<Starting> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("admin-starting".into())
            .spawn(move || {
                while !stopping.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => answer(stream),
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })?;
        Ok(Starting {
            stop,
            thread: Some(thread),
            addr,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops answering and releases the port (waits for the thread).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn answer(mut stream: TcpStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    // Read up to the end of the headers: a request can come in several segments, and closing
    // with some of it unread makes the kernel reset the connection, so the prober gets an
    // error instead of the answer.
    let mut request = [0u8; 1024];
    let mut n = 0;
    while n < request.len() && !request[..n].windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut request[n..]) {
            Ok(0) | Err(_) => break,
            Ok(read) => n += read,
        }
    }
    let line = String::from_utf8_lossy(&request[..n]);
    let path = line.split_whitespace().nth(1).unwrap_or("/");
    let (status, body) = if path == "/health" {
        ("200 OK", r#"{"status":"ok"}"#)
    } else {
        (
            "503 Service Unavailable",
            r#"{"status":"not ready","checks":{"journal":"opening"}}"#,
        )
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = TcpStream::connect(addr).unwrap();
        // In two segments, split inside the path: the responder must wait for the whole
        // request line (and the headers: closing on unread bytes resets the connection).
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        let (first, rest) = request.split_at(8);
        stream.write_all(first.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        stream.write_all(rest.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    }

    #[test]
    fn alive_but_not_ready_then_the_port_is_free_again() {
        let starting = Starting::start("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = starting.local_addr();
        assert!(get(addr, "/health").starts_with("HTTP/1.1 200"));
        let ready = get(addr, "/ready");
        assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
        assert!(ready.contains("opening"), "{ready}");
        starting.stop();
        TcpListener::bind(addr).expect("the port is released");
    }
}
