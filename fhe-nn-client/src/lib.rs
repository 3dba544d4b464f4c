//! Client side of the fhe-nn inference service.
//!
//! [`api`] holds the JSON bodies the server and the client share. With the default `http`
//! feature, [`Client`] talks to a server over HTTP (blocking), and the `fhe-nn-client`
//! command generates keys, uploads the evaluation key and predicts on encrypted samples.
//! The client key never leaves the client: only the evaluation key and ciphertexts are sent.

pub mod api;
#[cfg(feature = "http")]
mod http;

#[cfg(feature = "http")]
pub use http::{Client, ClientError};
