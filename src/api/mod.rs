//! The API's messages, generated from `proto/`, and their conversion into app commands and back.
//! Every request is turned into a command by one `TryFrom`, which collects every bad field into
//! one `AppError::InvalidArgument`. Nothing here does I/O or knows the transport: the gRPC
//! services and the command-line import (which builds `ImportLeadsRequest` messages from CSV
//! rows) both convert through here, so both accept and refuse alike.

pub mod convert;
pub mod forecast_requests;
pub mod forecast_responses;
pub mod import;
pub mod lead_requests;
pub mod pipeline_requests;
pub mod responses;

pub mod pb {
    tonic::include_proto!("leadpipe.v1");

    /// The file descriptor set that server reflection serves.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/leadpipe_descriptor.bin"));
}
