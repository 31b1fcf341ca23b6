import AFA
import Crypto
import Foundation
import Hummingbird
import Logging

/// Loads the checkpoint once and builds the application: the routes of `SegmentController`,
/// `GET /metrics`, request logging and metrics for every route.
public func buildApplication(config: ServerConfig, logger: Logger) throws -> some ApplicationProtocol {
    let data: Data
    do { data = try Data(contentsOf: URL(fileURLWithPath: config.checkpoint)) } catch {
        throw AFAError.invalidInput("\(config.checkpoint): cannot read the checkpoint: \(error.localizedDescription)")
    }
    let engine = try Segmenter(checkpointData: data, name: config.checkpoint, limits: InferenceLimits(maxPixels: config.maxPixels),
                               maxConcurrent: config.maxConcurrency, maxQueued: config.maxQueue)
    let sha = SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
    logger.info("model loaded", metadata: [
        "checkpoint": "\(config.checkpoint)", "sha256": "\(sha)", "preset": "\(engine.recipe.preset)",
        "classes": "\(engine.classNames.count)", "max_concurrency": "\(engine.queue.maxConcurrent)",
        "threads_per_request": "\(engine.queue.workersPerJob)",
    ])
    let router = buildRouter(engine: engine, config: config, checkpointSHA256: sha, metrics: ServerMetrics())
    return Application(router: router,
                       server: .http1(configuration: .init(idleTimeout: .seconds(Int64(config.idleTimeoutSeconds)))),
                       configuration: .init(address: .hostname(config.host, port: config.port), serverName: "afa-server"),
                       logger: logger)
}

/// The router on its own (tests use it with any engine).
public func buildRouter(engine: Segmenter, config: ServerConfig, checkpointSHA256: String, metrics: ServerMetrics) -> Router<AFARequestContext> {
    let router = Router(context: AFARequestContext.self)
    router.add(middleware: LogRequestsMiddleware(.info))
    router.add(middleware: MetricsMiddleware(metrics: metrics, queue: engine.queue))
    let info = ModelInfo(preset: engine.recipe.preset, classNames: engine.classNames,
                         limits: .init(maxPixels: config.maxPixels, maxBodyBytes: config.maxBodyBytes,
                                       maxConcurrency: engine.queue.maxConcurrent, maxQueue: engine.queue.maxQueued,
                                       contentTypes: SegmentController.imageTypes.sorted()),
                         checkpointSHA256: checkpointSHA256, afaVersion: AFAInfo.version)
    SegmentController(engine: engine, config: config, model: info).addRoutes(to: router)
    router.get("/metrics") { _, _ -> Response in
        metrics.observe(engine.queue)
        return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                        body: .init(byteBuffer: ByteBuffer(string: metrics.exposition())))
    }
    return router
}
