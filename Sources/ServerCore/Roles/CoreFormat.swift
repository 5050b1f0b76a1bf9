/// What the supervisor and webserver-core must agree on: the messages (`Message`), the fd slots
/// (`ListenerSlot`, `ManagerSlot`, `WorkerSlot`), the configuration's JSON and the arguments a child is
/// started with. The supervisor runs a webserver-core only when it answers `--core-format` with this
/// number, so a core left from another build is not mixed into the tree. Raise it with any change to
/// those (ServerTests' `CoreFormatTests` fails until it is).
public enum CoreFormat {
    public static let version = 1
    /// The argument webserver-core answers with `version` (and nothing else).
    public static let argument = "--core-format"
}
