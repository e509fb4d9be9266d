//! Undo of the steps of a half-done operation.
//!
//! Each step, once done, pushes its undo. If the operation returns early (an error, or a
//! panic unwinding through it), dropping the [`Rollback`] runs the undos in reverse order;
//! when the operation succeeds it calls [`Rollback::disarm`] and the undos are dropped
//! unrun. An undo that fails is logged and the others still run: leaving less behind is
//! better than stopping at the first problem.

use super::SandboxError;

type Undo<'a> = Box<dyn FnOnce() -> Result<(), SandboxError> + 'a>;

pub(super) struct Rollback<'a> {
    /// Names the operation in the logs.
    what: String,
    undos: Vec<(&'static str, Undo<'a>)>,
}

impl<'a> Rollback<'a> {
    pub(super) fn new(what: &str) -> Self {
        Rollback {
            what: what.to_string(),
            undos: Vec::new(),
        }
    }

    pub(super) fn push(
        &mut self,
        step: &'static str,
        undo: impl FnOnce() -> Result<(), SandboxError> + 'a,
    ) {
        self.undos.push((step, Box::new(undo)));
    }

    /// The operation succeeded: keep everything.
    pub(super) fn disarm(mut self) {
        self.undos.clear();
    }
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        while let Some((step, undo)) = self.undos.pop() {
            match undo() {
                Ok(()) => tracing::debug!(sandbox = %self.what, step, "rolled back"),
                Err(e) => {
                    tracing::warn!(sandbox = %self.what, step, error = %e, "rollback step failed")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn undoes_in_reverse_unless_disarmed() {
        let log = RefCell::new(Vec::new());
        {
            let mut rollback = Rollback::new("t");
            rollback.push("a", || {
                log.borrow_mut().push("a");
                Ok(())
            });
            rollback.push("b", || Err(SandboxError::NamespaceThread));
            rollback.push("c", || {
                log.borrow_mut().push("c");
                Ok(())
            });
        }
        assert_eq!(*log.borrow(), ["c", "a"]);

        let mut rollback = Rollback::new("t");
        rollback.push("a", || {
            log.borrow_mut().push("again");
            Ok(())
        });
        rollback.disarm();
        assert_eq!(log.borrow().len(), 2);
    }
}
