//! Turning library errors into gRPC statuses. The kubelet and crictl show the
//! message to people and act on the code (e.g. back off on UNAVAILABLE), so
//! both matter: the code says what kind of failure it is, the message keeps
//! the whole story.

use peapod_rootfs::Error;
use tonic::{Code, Status};

/// A gRPC status for an image store error.
pub fn image_error(error: Error) -> Status {
    let code = match &error {
        Error::InvalidReference { .. } | Error::InvalidDigest(_) => Code::InvalidArgument,
        Error::InvalidData { what, .. } if what == "auth" => Code::InvalidArgument,
        Error::ImageNotFound(_) | Error::NoMatchingPlatform { .. } => Code::NotFound,
        Error::ImageInUse { .. } => Code::FailedPrecondition,
        Error::RegistryBlocked { .. } => Code::PermissionDenied,
        Error::DigestMismatch { .. } => Code::DataLoss,
        Error::Pull { reason, .. } => pull_failure_code(reason),
        _ => Code::Internal,
    };
    Status::new(code, error.to_string())
}

/// Classifies a failed pull from the registry's answers.
///
/// The store reports every attempt (each mirror, each transport) as text, so
/// the kind of failure is read from it. The most telling answer wins: a
/// registry that refused our credentials or does not know the image says more
/// than another endpoint that could not be reached at all.
fn pull_failure_code(reason: &str) -> Code {
    let reason = reason.to_ascii_lowercase();
    let says = |needles: &[&str]| needles.iter().any(|n| reason.contains(n));
    // Status numbers only with their label: a bare "403" is also in port 40301.
    if says(&[
        "authentication failure",
        "authentication required",
        "not authorized",
        "unauthorized",
        "code: 401",
    ]) {
        Code::Unauthenticated
    } else if says(&["resource is denied", "forbidden", "code: 403"]) {
        Code::PermissionDenied
    } else if says(&["manifest unknown", "name unknown", "not found", "code: 404"]) {
        Code::NotFound
    } else if says(&[
        "connection refused",
        "connect",
        "timed out",
        "dns",
        "unreachable",
        "error sending request",
        "reset by peer",
    ]) {
        Code::Unavailable
    } else {
        Code::Unknown
    }
}

/// INVALID_ARGUMENT for a request that lacks a required field.
pub fn missing(field: &str) -> Status {
    Status::invalid_argument(format!("{field} must not be empty"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pull(reason: &str) -> Code {
        image_error(Error::Pull {
            reference: "127.0.0.1:5000/x:1".into(),
            reason: reason.into(),
        })
        .code()
    }

    #[test]
    fn pull_failures_are_classified() {
        assert_eq!(
            pull("fetching manifest: 401 Unauthorized"),
            Code::Unauthenticated
        );
        assert_eq!(pull("fetching manifest: manifest unknown"), Code::NotFound);
        assert_eq!(
            pull(
                "x (http): error sending request: connection refused; x (https): tcp connect error"
            ),
            Code::Unavailable
        );
        // One endpoint unreachable, the other does not know the image.
        assert_eq!(
            pull("a (https): tcp connect error; a (http): manifest unknown"),
            Code::NotFound
        );
        assert_eq!(pull("something odd"), Code::Unknown);
        // Port numbers are not status codes.
        assert_eq!(
            pull("127.0.0.1:40301/x:1 (http): OCI API error: manifest unknown"),
            Code::NotFound
        );
        assert_eq!(
            pull("Server error: url http://127.0.0.1:4013/v2/, code: 403, message: no"),
            Code::PermissionDenied
        );
    }

    #[test]
    fn messages_are_kept() {
        let status = image_error(Error::ImageInUse {
            image: "busybox".into(),
            users: vec!["ctr-1".into()],
        });
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(status.message().contains("ctr-1"));
    }
}
