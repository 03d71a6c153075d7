//! The integration tests see the loopback venues.

#[test]
fn loopback_servers_are_available_to_integration_tests() {
    let server = crypy_exchange::loopback::HttpServer::start(|_| {
        crypy_exchange::loopback::Reply::Respond(crypy_exchange::loopback::HttpResponse::json(200, "{}"))
    })
    .unwrap();
    assert!(server.url().starts_with("http://127.0.0.1:"));
}
