//! A raw TCP upstream on loopback that misbehaves in one chosen way, for fault injection.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// How the upstream misbehaves.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Reads the request and never answers.
    Hang,
    /// Reads the request, then closes the connection without a word.
    CloseAfterRequest,
    /// Reads the request, then resets the connection (RST).
    Reset,
    /// Announces a 200 with a 100-byte body, sends 10 bytes and closes.
    TruncatedBody,
    /// A complete 200 whose body is not JSON.
    InvalidJson,
    /// A 200 whose JSON body (60 bytes) arrives one byte every 100 ms.
    Trickle,
}

/// The misbehaving upstream.
pub struct FaultyUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    requests: Arc<AtomicUsize>,
}

impl FaultyUpstream {
    /// Starts the upstream on a runtime of its own (a thread), so that its tasks never count
    /// among the tasks of the runtime under test.
    pub async fn start(fault: Fault) -> FaultyUpstream {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = TcpListener::from_std(std_listener).unwrap();
                while let Ok((stream, _)) = listener.accept().await {
                    let counter = counter.clone();
                    tokio::spawn(async move { serve(stream, fault, counter).await });
                }
            });
        });
        FaultyUpstream { addr, requests }
    }

    /// Its base URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests whose head (and body, when announced) arrived completely.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

async fn serve(mut stream: TcpStream, fault: Fault, requests: Arc<AtomicUsize>) {
    loop {
        if !read_request(&mut stream).await {
            return;
        }
        requests.fetch_add(1, Ordering::SeqCst);
        match fault {
            Fault::Hang => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                return;
            }
            Fault::CloseAfterRequest => return,
            Fault::Reset => {
                #[allow(deprecated)] // A reset is the point: SO_LINGER 0 makes the close send RST.
                let _ = stream.set_linger(Some(Duration::ZERO));
                return;
            }
            Fault::TruncatedBody => {
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"name\":\"ab")
                    .await;
                return;
            }
            Fault::InvalidJson => {
                let body = b"this is not json";
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                if stream.write_all(head.as_bytes()).await.is_err()
                    || stream.write_all(body).await.is_err()
                {
                    return;
                }
            }
            Fault::Trickle => {
                let body = br#"{"name":"slowly, one byte every tenth of a second, but surely"}"#;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                if stream.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                for byte in body {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if stream.write_all(&[*byte]).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Reads one HTTP/1.1 request (head and `content-length` body); false at end of stream.
async fn read_request(stream: &mut TcpStream) -> bool {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
    true
}
