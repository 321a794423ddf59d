//! A run on the host: its plan and the agent runtime of remote pods.
