package main

// onQueued returns the hook the API calls after a request queued outbox
// messages: it wakes this process's delivery worker (role all) so that it
// leases at once instead of at its next poll. Nil when the role runs no
// worker; workers of other processes keep polling.
func (m *serveMain) onQueued() func() {
	if !runsWorkers(m.cfg.Config.Role) {
		return nil
	}
	return func() {
		// m.dlv is set before the server starts serving (Open).
		if m.dlv != nil && m.dlv.worker != nil {
			m.dlv.worker.Wake()
		}
	}
}
