import AFA
import Foundation

/// What the server is started with (flags or environment variables, see `afa-server --help`).
public struct ServerConfig: Sendable {
    /// The checkpoint written by `afa train`.
    public var checkpoint: String
    public var host = "127.0.0.1"
    public var port = 8080
    /// Requests computed at once; each gets an equal share of the worker threads. Default: one per core.
    public var maxConcurrency: Int?
    /// Requests that wait for a slot; more are answered 503.
    public var maxQueue = 64
    /// Largest request body, bytes.
    public var maxBodyBytes = 10 << 20
    /// Largest image, pixels (width × height): checked from the image header before decoding, and at every
    /// requested scale before the model runs.
    public var maxPixels = InferenceLimits().maxPixels
    /// Seconds a connection may go without sending anything before it is closed, so clients that open
    /// connections and stall (or stop halfway through a body) cannot hold them forever.
    public var idleTimeoutSeconds = 30

    public init(checkpoint: String) { self.checkpoint = checkpoint }
}
