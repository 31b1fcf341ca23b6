import AFA
import AFAServer
import ArgumentParser
import Foundation
import Logging

/// `afa-server`: segment uploaded images over HTTP with a trained checkpoint.
@main
struct AFAServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "afa-server",
        abstract: "Serve an AFA checkpoint over HTTP: POST /v1/segment, GET /v1/model, /health, /metrics.",
        discussion: """
            Every option can also come from the environment: AFA_CHECKPOINT, AFA_HOST, AFA_PORT, AFA_MAX_CONCURRENCY, \
            AFA_MAX_QUEUE, AFA_MAX_BODY_MB, AFA_MAX_PIXELS, AFA_IDLE_TIMEOUT, AFA_THREADS, AFA_LOG_LEVEL (a flag wins over its variable). \
            SIGTERM or SIGINT stops accepting connections and finishes the requests in flight.
            """)

    @Option(help: "Checkpoint written by afa train.") var checkpoint: String?
    @Option(help: "Address to listen on (default 127.0.0.1).") var host: String?
    @Option(help: "Port (default 8080).") var port: Int?
    @Option(help: "Requests computed at once (default: one per thread).") var maxConcurrency: Int?
    @Option(help: "Requests waiting for a slot before 503 (default 64).") var maxQueue: Int?
    @Option(help: "Largest request body in MiB (default 10).") var maxBodyMb: Int?
    @Option(help: "Largest image in pixels, width × height, at every requested scale (default 1048576).") var maxPixels: Int?
    @Option(help: "Seconds a connection may send nothing before it is closed (default 30).") var idleTimeout: Int?
    @Option(help: "Worker threads in all (default: one per core).") var threads: Int?
    @Option(help: "trace, debug, info, notice, warning, error or critical (default info).") var logLevel: String?

    mutating func validate() throws {
        let env = ProcessInfo.processInfo.environment
        func fromEnv(_ name: String) throws -> Int? {
            guard let v = env[name] else { return nil }
            guard let n = Int(v) else { throw ValidationError("\(name)='\(v)' is not a whole number") }
            return n
        }
        checkpoint = checkpoint ?? env["AFA_CHECKPOINT"]
        host = host ?? env["AFA_HOST"]
        port = try port ?? fromEnv("AFA_PORT")
        maxConcurrency = try maxConcurrency ?? fromEnv("AFA_MAX_CONCURRENCY")
        maxQueue = try maxQueue ?? fromEnv("AFA_MAX_QUEUE")
        maxBodyMb = try maxBodyMb ?? fromEnv("AFA_MAX_BODY_MB")
        maxPixels = try maxPixels ?? fromEnv("AFA_MAX_PIXELS")
        idleTimeout = try idleTimeout ?? fromEnv("AFA_IDLE_TIMEOUT")
        threads = try threads ?? fromEnv("AFA_THREADS")
        logLevel = logLevel ?? env["AFA_LOG_LEVEL"]
        guard checkpoint != nil else { throw ValidationError("give --checkpoint FILE (or AFA_CHECKPOINT)") }
        if let p = port, !(0...65535).contains(p) { throw ValidationError("--port \(p) is not in 0…65535") }
        for (name, v) in [("--max-concurrency", maxConcurrency), ("--max-body-mb", maxBodyMb), ("--max-pixels", maxPixels), ("--idle-timeout", idleTimeout), ("--threads", threads)] {
            if let v, v < 1 { throw ValidationError("\(name) must be at least 1, got \(v)") }
        }
        if let q = maxQueue, q < 0 { throw ValidationError("--max-queue must be 0 or more, got \(q)") }
        if let l = logLevel, Logger.Level(rawValue: l) == nil { throw ValidationError("--log-level '\(l)' is not a log level") }
    }

    func run() async throws {
        BLASKernel.reexecWithFastKernelIfNeeded()
        Runtime.setThreads(threads)
        var config = ServerConfig(checkpoint: checkpoint!)
        if let host { config.host = host }
        if let port { config.port = port }
        config.maxConcurrency = maxConcurrency
        if let maxQueue { config.maxQueue = maxQueue }
        if let maxBodyMb { config.maxBodyBytes = maxBodyMb << 20 }
        if let maxPixels { config.maxPixels = maxPixels }
        if let idleTimeout { config.idleTimeoutSeconds = idleTimeout }
        LoggingSystem.bootstrap(StreamLogHandler.standardError)
        var logger = Logger(label: "afa-server")
        logger.logLevel = logLevel.flatMap(Logger.Level.init(rawValue:)) ?? .info
        let app = try buildApplication(config: config, logger: logger)
        try await app.runService()
    }
}
