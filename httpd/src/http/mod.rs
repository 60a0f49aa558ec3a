//! HTTP/1.1 logic as pure functions over bytes: parsing and validating a request head, the
//! request target, conditionals, ranges, content negotiation, response heads. No sockets here,
//! so everything is unit-tested and fuzzable.

pub mod chunked;
pub mod conditional;
pub mod date;
pub mod exchange;
pub mod negotiate;
pub mod proxy;
pub mod range;
pub mod request;
pub mod response;
pub mod target;
