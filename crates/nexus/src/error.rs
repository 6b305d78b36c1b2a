//! Status codes and the one error type of the core.
//!
//! Every fallible call returns [`Result`]. The status says what class of
//! failure it is (the Python layer maps it to `ValueError`, `TypeError`,
//! `TimeoutError` or `nexus.Error`); the message names the object and the
//! value at fault.

use std::fmt;

macro_rules! statuses {
    ($($name:ident = $value:expr),* $(,)?) => {
        /// Status codes shared by every runtime. `Success` is 0, failures are negative.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(i32)]
        pub enum Status { $($name = $value),* }

        impl Status {
            /// Every status, in declaration order.
            pub const ALL: &'static [Status] = &[$(Status::$name),*];

            /// The name the Python API exposes (`NXS_Success`, ...).
            pub fn name(self) -> &'static str {
                match self { $(Status::$name => concat!("NXS_", stringify!($name))),* }
            }
        }
    };
}

statuses! {
    Success = 0,
    InvalidValue = -1,
    InvalidType = -2,
    InvalidProperty = -3,
    InvalidRuntime = -4,
    InvalidDevice = -5,
    InvalidBuffer = -6,
    InvalidLibrary = -7,
    InvalidKernel = -8,
    InvalidCommand = -9,
    InvalidSchedule = -10,
    InvalidStream = -11,
    InvalidEvent = -12,
    InvalidArgument = -13,
    InvalidSize = -14,
    OutOfMemory = -15,
    Timeout = -16,
    DriverError = -17,
    CompileError = -18,
    NotSupported = -19,
    Released = -20,
}

impl Status {
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// A failure, with the status class and a message naming the object and value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Error {
    pub status: Status,
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Error {
    pub fn new(status: Status, message: impl Into<String>) -> Self {
        Error {
            status,
            message: message.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// An optional driver entry point, or `NotSupported` naming it (the
/// installed driver predates the call).
pub fn entry_point<T>(f: Option<T>, name: &str) -> Result<T> {
    f.ok_or_else(|| Error::new(Status::NotSupported, format!("{name} is missing")))
}
