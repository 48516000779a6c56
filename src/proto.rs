//! The generated `wnology.v1` messages, services and their canonical proto3 JSON impls.

#![allow(clippy::all, missing_docs)]

use serde::{Deserialize, Deserializer, Serialize, Serializer};

tonic::include_proto!("wnology.v1");
// The servers, generated apart so that they answer with `crate::reply::Encoded` (see build.rs).
tonic::include_proto!("wnology.v1.MeService");
tonic::include_proto!("wnology.v1.OrgService");
tonic::include_proto!("wnology.v1.InstanceOrgService");
include!(concat!(env!("OUT_DIR"), "/wnology.v1.serde.rs"));

/// The encoded `FileDescriptorSet` of every `.proto` file the gateway serves.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("wnology_descriptor");

/// The encoded `FileDescriptorSet` of `google/rpc/status.proto` and `error_details.proto` (and
/// their imports): served by reflection only, so that tools can decode error details.
pub const GOOGLE_RPC_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("google_rpc_descriptor");

impl PayloadStats {
    /// The count maps of every payload type, in field order.
    pub fn types(&self) -> [&std::collections::HashMap<String, f64>; 19] {
        [
            &self.app_file,
            &self.data_table,
            &self.device_create,
            &self.device_command,
            &self.device_connect,
            &self.device_disconnect,
            &self.device_state,
            &self.endpoint,
            &self.event,
            &self.flow_error,
            &self.inbound_email,
            &self.integration,
            &self.mqtt_in,
            &self.mqtt_out,
            &self.notebook,
            &self.resource_job,
            &self.timer,
            &self.virtual_button,
            &self.webhook,
        ]
    }
}

// `disabledAt` is `false` (or `true`, in a patch) or a date-time in the upstream JSON, a shape
// proto3's JSON mapping has no word for, so `DisabledAt` is excluded from pbjson and its JSON is
// the bare value.
impl Serialize for DisabledAt {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.value {
            Some(disabled_at::Value::Flag(flag)) => serializer.serialize_bool(*flag),
            Some(disabled_at::Value::At(at)) => at.serialize(serializer),
            None => serializer.serialize_none(),
        }
    }
}

impl<'de> Deserialize<'de> for DisabledAt {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged, expecting = "a boolean or an RFC 3339 date-time")]
        enum Repr {
            Flag(bool),
            At(pbjson_types::Timestamp),
        }
        let value = Option::<Repr>::deserialize(deserializer)?.map(|repr| match repr {
            Repr::Flag(flag) => disabled_at::Value::Flag(flag),
            Repr::At(at) => disabled_at::Value::At(at),
        });
        Ok(DisabledAt { value })
    }
}
