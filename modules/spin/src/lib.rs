//! `spin`: a module that never returns, on purpose.
//!
//! Every request loops forever without calling the host. Tests use it to
//! prove the base's CPU deadline interrupts it (504) and that a spinning
//! module does not stall the requests of its neighbours.

wasip2::http::proxy::export!(Spin);

struct Spin;

impl wasip2::exports::http::incoming_handler::Guest for Spin {
    fn handle(
        _request: wasip2::http::types::IncomingRequest,
        _response_out: wasip2::http::types::ResponseOutparam,
    ) {
        let mut x: u64 = 1;
        loop {
            // Opaque to the optimiser, so the loop is really executed.
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
}
