//! Triggers: what makes a component run. Every one goes through the one [`Executor`]
//! (slot, instance, deadline, failure, counters); each only adapts its input and output.
//!
//! - [`http`]: a request from the gateway, a timer or another component; the answer
//!   streams back. Also the gateway's [`http::GatewayBackend`].
//! - [`messaging`]: each component's subscriptions; every delivery to its
//!   `incoming-handler`, durable ones settled after it.
//! - [`timer`]: a component's `schedule`, as in-process `POST`s on a period.
//! - [`remote`]: calls from other hosts of the cluster (over NATS); calls to the
//!   components that run only there go through [`crate::cluster`].

pub mod executor;
pub mod http;
pub mod messaging;
pub mod remote;
pub mod timer;

pub use executor::Executor;
