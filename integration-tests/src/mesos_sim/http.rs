//! The simulated masters' HTTP endpoint, `POST /api/v1/scheduler`, with the real master's
//! rules (`src/master/http.cpp`, `Master::Http::scheduler` and `redirect`):
//!
//! | Request | Answer |
//! |---|---|
//! | not `POST` | `405` |
//! | to a master that is not the leader | `307`, `Location: //<leader host>:<port>/api/v1/scheduler` (no scheme) |
//! | while no leader is elected | `503 No leader elected` |
//! | without the configured basic-auth credentials | `401` |
//! | no `Content-Type` | `400`; `application/x-protobuf` or another type: `415` |
//! | an `Accept` that rules out `application/json` | `406` |
//! | JSON that is not a `Call` (an unknown field included, stricter than Mesos) | `400` |
//! | `SUBSCRIBE` with a `Mesos-Stream-Id` header | `400` |
//! | any other call: no `framework_id` / unknown framework | `400` |
//! | … framework not subscribed | `403 Framework is not subscribed` |
//! | … no or another `Mesos-Stream-Id` | `400` |
//!
//! `SUBSCRIBE` answers `200` with `Mesos-Stream-Id` and a RecordIO stream that the simulator
//! cuts at random points on purpose: records split across chunks, several records in one.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::CallRecord;
use super::runner;
use super::state::{Sim, base64, random_bytes};
use super::wire::{self, CallType};

type ResponseBody = BoxBody<Bytes, Infallible>;

/// The event stream's body: records from the simulator, cut into random chunks.
struct EventBody {
    rx: mpsc::UnboundedReceiver<Vec<u8>>,
    buf: VecDeque<u8>,
    sim: Weak<Sim>,
    framework: String,
    stream_id: String,
}

impl Body for EventBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let mut closed = false;
        // Take what is there (several records may end up in one chunk).
        while this.buf.len() < 8192 {
            match this.rx.poll_recv(cx) {
                Poll::Ready(Some(record)) => this.buf.extend(record),
                Poll::Ready(None) => {
                    closed = true;
                    break;
                }
                Poll::Pending => break,
            }
        }
        if this.buf.is_empty() {
            return if closed {
                Poll::Ready(None)
            } else {
                Poll::Pending
            };
        }
        // A random cut: anywhere from one byte to everything buffered.
        let r = u32::from_le_bytes(random_bytes::<4>()) as usize;
        let n = 1 + r % this.buf.len();
        let chunk: Vec<u8> = this.buf.drain(..n).collect();
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }
}

impl Drop for EventBody {
    fn drop(&mut self) {
        // The connection is gone: the framework is disconnected, if this was its stream.
        if let Some(sim) = self.sim.upgrade() {
            let mut st = sim.lock();
            let current = st
                .frameworks
                .get(&self.framework)
                .and_then(|f| f.stream.as_ref())
                .is_some_and(|s| s.id == self.stream_id);
            if current {
                st.disconnect(&self.framework);
            }
        }
    }
}

fn text(status: u16, body: impl Into<String>) -> Response<ResponseBody> {
    let mut r = Response::new(Full::new(Bytes::from(body.into())).boxed());
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r
}

/// Serves master number `master` on `listener` until the task is aborted.
pub(crate) async fn serve(sim: Arc<Sim>, master: usize, listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let sim = sim.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let sim = sim.clone();
                async move { Ok::<_, Infallible>(handle(sim, master, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn accepts_json(value: Option<&str>) -> bool {
    let Some(value) = value else {
        return true;
    };
    value.split(',').any(|range| {
        let media = range
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        matches!(media.as_str(), "application/json" | "application/*" | "*/*")
    })
}

async fn handle(sim: Arc<Sim>, master: usize, req: Request<Incoming>) -> Response<ResponseBody> {
    let (response, call) = route(&sim, master, req).await;
    sim.lock().calls.push(CallRecord {
        master,
        call: call.unwrap_or_default(),
        status: response.status().as_u16(),
    });
    response
}

async fn route(
    sim: &Arc<Sim>,
    master: usize,
    req: Request<Incoming>,
) -> (Response<ResponseBody>, Option<String>) {
    if req.uri().path() != "/api/v1/scheduler" {
        return (text(404, ""), None);
    }
    if req.method() != Method::POST {
        return (
            text(
                405,
                format!("Expecting 'POST', received '{}'", req.method()),
            ),
            None,
        );
    }
    let leader = {
        let st = sim.lock();
        st.leader.map(|l| (l, st.masters.get(l).copied()))
    };
    match leader {
        None => return (text(503, "No leader elected"), None),
        Some((l, Some(addr))) if l != master => {
            let mut r = text(307, "");
            let location = format!("//{}:{}/api/v1/scheduler", addr.ip(), addr.port());
            if let Ok(v) = location.parse() {
                r.headers_mut().insert(LOCATION, v);
            }
            return (r, None);
        }
        _ => {}
    }
    if let Some((principal, secret)) = &sim.config.credentials {
        let expected = format!(
            "Basic {}",
            base64(format!("{principal}:{secret}").as_bytes())
        );
        let given = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if given != Some(expected.as_str()) {
            let mut r = text(401, "Unauthorized");
            r.headers_mut().insert(
                WWW_AUTHENTICATE,
                hyper::header::HeaderValue::from_static("Basic realm=\"mesos\""),
            );
            return (r, None);
        }
    }
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
    match content_type.as_deref() {
        None => return (text(400, "Expecting 'Content-Type' to be present"), None),
        Some("application/json") => {}
        Some("application/x-protobuf") => {
            return (
                text(
                    415,
                    "This Mesos master simulator speaks only application/json",
                ),
                None,
            );
        }
        Some(other) => {
            return (
                text(
                    415,
                    format!(
                        "Expecting 'Content-Type' of application/json or application/x-protobuf, got '{other}'"
                    ),
                ),
                None,
            );
        }
    }
    let accept = req
        .headers()
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if !accepts_json(accept.as_deref()) {
        return (
            text(
                406,
                "Expecting 'Accept' to allow 'application/json' or 'application/x-protobuf'",
            ),
            None,
        );
    }
    let stream_header = req
        .headers()
        .get("Mesos-Stream-Id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = match Limited::new(req.into_body(), 16 << 20).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return (text(400, format!("Failed to read the body: {e}")), None),
    };
    let call: wire::Call = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return (
                text(
                    400,
                    format!("Failed to convert JSON into Call protobuf: {e}"),
                ),
                None,
            );
        }
    };
    let name = Some(call.kind.name().to_owned());
    if call.kind == CallType::Subscribe {
        if stream_header.is_some() {
            return (
                text(
                    400,
                    "Subscribe calls should not include the 'Mesos-Stream-Id' header",
                ),
                name,
            );
        }
        return match sim.subscribe(master, call) {
            Ok((framework, stream_id, rx)) => {
                let body = EventBody {
                    rx,
                    buf: VecDeque::new(),
                    sim: Arc::downgrade(sim),
                    framework,
                    stream_id: stream_id.clone(),
                };
                let mut r = Response::new(body.boxed());
                r.headers_mut().insert(
                    CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static("application/json"),
                );
                if let Ok(v) = stream_id.parse() {
                    r.headers_mut().insert("Mesos-Stream-Id", v);
                }
                (r, name)
            }
            Err((status, message)) => (text(status, message), name),
        };
    }
    let framework = match sim.check_caller(call.framework_id.as_ref(), stream_header.as_deref()) {
        Ok(f) => f,
        Err((status, message)) => return (text(status, message), name),
    };
    match sim.call(&framework, call) {
        Ok(effects) => {
            for task in effects.launch {
                runner::launch(sim, task);
            }
            for (task, grace) in effects.kill {
                runner::kill(sim, task, grace);
            }
            for task in effects.stop {
                runner::stop_quietly(sim, &task);
            }
            (text(202, ""), name)
        }
        Err((status, message)) => (text(status, message), name),
    }
}
