//! A small HTTP server on a thread of its own, stopped when dropped: what the demo's sample
//! sites and identity provider (and the tests' fakes) are served with. Leaves out the gateway
//! itself, whose start-up is async and lives in `app.rs`.

use std::net::TcpListener;
use std::thread::JoinHandle;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpServer, web};

/// A running server; dropping it stops the server and waits for its thread.
pub struct ThreadServer {
    handle: ServerHandle,
    thread: Option<JoinHandle<()>>,
}

impl ThreadServer {
    /// Serves the app that `configure` describes on `listener`, with one worker, on a thread
    /// named `name`. Returns once the server is listening.
    pub fn start(
        name: &str,
        listener: TcpListener,
        configure: impl Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
    ) -> std::io::Result<ThreadServer> {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                actix_web::rt::System::new().block_on(async move {
                    let server = HttpServer::new(move || App::new().configure(configure.clone()))
                        .workers(1)
                        .disable_signals()
                        .shutdown_timeout(1)
                        .listen(listener);
                    match server {
                        Ok(server) => {
                            let server = server.run();
                            let _ = tx.send(Ok(server.handle()));
                            let _ = server.await;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    }
                });
            })?;
        let handle = rx
            .recv()
            .map_err(|_| std::io::Error::other(format!("{name}: server thread ended")))??;
        Ok(ThreadServer {
            handle,
            thread: Some(thread),
        })
    }
}

impl Drop for ThreadServer {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let handle = self.handle.clone();
            // The handle's future completes once the server has stopped; it needs a runtime,
            // and the dropping thread may be inside one already.
            let _ = std::thread::spawn(move || {
                actix_web::rt::System::new().block_on(handle.stop(false));
            })
            .join();
            let _ = thread.join();
        }
    }
}
