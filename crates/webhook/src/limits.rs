//! What one client may cost the webhook server: timeouts on every phase of a connection
//! and caps on what is open at once, so that idle or slow connections (TCP, TLS, HTTP/1.1
//! or HTTP/2) cannot exhaust the memory or file descriptors of the operator.
//!
//! The caps bound memory ([`ServerLimits::memory_bound`]): with the defaults, 256
//! connections × ~290 KiB of TLS and HTTP buffers ≈ 74 MiB, plus 16 requests × 6 MiB =
//! 96 MiB of bodies being read: ~170 MiB at worst, within a 256 Mi limit. An admission of
//! a real Pod is ~10 KiB.

use std::time::Duration;

/// The server's timeouts and caps; [`ServerLimits::default`] is meant for production.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLimits {
    /// A TLS handshake must finish this long after the connection is accepted (the API
    /// server's own handshake timeout is 10 s).
    pub handshake_timeout: Duration,
    /// HTTP/1.1: a request's head must arrive within this. hyper also times the wait for
    /// the next request on a kept-alive connection with it, so an idle HTTP/1.1
    /// connection is closed after this, not after `idle_timeout` (the API server speaks
    /// HTTP/2 to webhooks).
    pub header_read_timeout: Duration,
    /// A request's body must have arrived this long after it got a slot (the API server
    /// waits 5 s for an answer by default, 30 s at most; a real body arrives in
    /// milliseconds). Past it the answer is 408.
    pub request_timeout: Duration,
    /// A connection with no request in flight for this long is closed (HTTP/2 with a
    /// GOAWAY). Longer than the 90 s after which the API server's Go client drops an idle
    /// connection itself, so that it is the client that closes a connection it reuses,
    /// and no Pod's admission is sent on a connection the server is closing.
    pub idle_timeout: Duration,
    /// HTTP/2: ping a connection this often, and close it when a ping is not answered
    /// within `keep_alive_timeout` (a peer that vanished without closing).
    pub keep_alive_interval: Duration,
    /// HTTP/2: how long a ping may go unanswered.
    pub keep_alive_timeout: Duration,
    /// Connections open at once, handshaking ones included. More wait in the kernel's
    /// accept queue until one closes. The API server needs a few (HTTP/2 multiplexes its
    /// admissions; it opens another connection per `max_concurrent_streams` admissions).
    pub max_connections: usize,
    /// Requests being read or answered at once, over all connections: with
    /// `max_body_bytes`, the bound on memory held by request bodies. An answer takes well
    /// under a millisecond, so 16 is thousands of admissions a second.
    pub max_requests: usize,
    /// How long a request over `max_requests` waits for a slot before it is answered 503
    /// (the webhook's failurePolicy is Ignore: the Pod is created without sidecars, as
    /// when the webhook is down). A burst is absorbed; a server held by slow requests
    /// answers fast instead of making the API server wait out its own timeout.
    pub queue_timeout: Duration,
    /// HTTP/2: streams (requests) open at once on one connection.
    pub max_concurrent_streams: u32,
    /// The largest request body, answered 413 past it. The API server accepts requests
    /// of up to 3 MiB (etcd stores objects of up to 1.5 MiB) and sends the Pod it would
    /// store — defaulted, as JSON, inside an AdmissionReview (no `oldObject` on CREATE,
    /// the only operation registered). 6 MiB is twice the request limit: room for the
    /// largest Pod's JSON, which is larger than its protobuf, and the review around it.
    pub max_body_bytes: usize,
    /// HTTP/2: how much of one stream's body a client may send before it is read (the
    /// protocol's default is 64 KiB).
    pub h2_stream_window: u32,
    /// HTTP/2: how much of all of a connection's bodies a client may send before they are
    /// read: the bound on what a connection buffers for requests waiting for a slot.
    pub h2_connection_window: u32,
    /// The largest request head (HTTP/2 header list; HTTP/1.1's read buffer is 4 times
    /// this, at least 8 KiB). The API server sends a few hundred bytes.
    pub max_header_bytes: u32,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            keep_alive_interval: Duration::from_secs(30),
            keep_alive_timeout: Duration::from_secs(10),
            max_connections: 256,
            max_requests: 16,
            queue_timeout: Duration::from_secs(1),
            max_concurrent_streams: 32,
            max_body_bytes: 6 * 1024 * 1024,
            h2_stream_window: 64 * 1024,
            h2_connection_window: 128 * 1024,
            max_header_bytes: 16 * 1024,
        }
    }
}

impl ServerLimits {
    /// An estimate of the most memory clients can make the server hold at once. Per
    /// connection: rustls's buffers (a handshake message of up to 64 KiB or a record of
    /// 18 KiB, 16 KiB of received plaintext, 64 KiB to send: ~150 KiB) and hyper's
    /// (HTTP/1.1's read buffer, or HTTP/2's unread bodies and a header list); then the
    /// bodies of the requests being read.
    pub fn memory_bound(&self) -> usize {
        const TLS: usize = 150 * 1024;
        let h2 = self.h2_connection_window as usize + self.max_header_bytes as usize;
        let http = self.h1_buffer().max(h2);
        self.max_connections * (TLS + http) + self.max_requests * self.max_body_bytes
    }

    /// HTTP/1.1's read buffer: a request head must fit in it.
    pub(crate) fn h1_buffer(&self) -> usize {
        (self.max_header_bytes as usize * 4).max(8 * 1024)
    }
}
