"""burrow-cni: the engine as a CNI plugin (spec 1.0.0, the 1.1 verbs GC and STATUS, 0.3.x/0.4.0).

Modules, pure first: `errors` (CNI error codes), `config` (environment, CNI_ARGS and stdin
config parsed into frozen records), `translate` (a parsed request + addresses -> the engine's
`schema.NetworkOptions`), `result` (the engine's `StatusBlock` -> CNI result JSON), then the
adapters: `hostlocal` (host-local-compatible address allocation persisted on disk), `transport`
(the engine call: warm engine or in-process), `check` (CHECK's look at the netns) and
`plugin` (the front door `main`).
"""
