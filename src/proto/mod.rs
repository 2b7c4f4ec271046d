//! KEDA's external scaler protocol (`proto/externalscaler.proto`): the messages and the
//! client as prost generates them, and the server, which reads the requests that carry a
//! `ScaledObjectRef` as the types of [`wire`], with the buffers of [`codec`].
#![allow(clippy::all, missing_docs)]

pub mod codec;
pub mod wire;

tonic::include_proto!("externalscaler");
include!(concat!(env!("OUT_DIR"), "/server/externalscaler.rs"));
