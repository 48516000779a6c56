//! wnology-gateway: a gRPC gateway in front of the WEGnology (white-labelled Losant) REST API.
#![forbid(unsafe_code)]

pub mod proto;
