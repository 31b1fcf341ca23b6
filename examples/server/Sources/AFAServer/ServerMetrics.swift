import AFA
import Foundation
import Hummingbird
import Metrics
import Prometheus

/// The server's metrics through swift-metrics, exported in Prometheus's text format by its own
/// registry (no process-wide bootstrap, so several servers — or tests — can live in one process):
/// requests by route and status, request latency as a histogram, requests computing and queued.
public final class ServerMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    let factory: PrometheusMetricsFactory
    let inFlight: Metrics.Gauge
    let queued: Metrics.Gauge

    public init() {
        registry = PrometheusCollectorRegistry()
        var f = PrometheusMetricsFactory(registry: registry)
        f.defaultDurationHistogramBuckets = [.milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
                                             .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500),
                                             .seconds(5), .seconds(10), .seconds(30)]
        factory = f
        inFlight = Metrics.Gauge(label: "afa_inference_in_flight", factory: f)
        queued = Metrics.Gauge(label: "afa_inference_queue_length", factory: f)
    }

    /// Counts one finished request and records its latency.
    func record(route: String, method: String, status: Int, seconds: Double) {
        Metrics.Counter(label: "afa_http_requests_total", dimensions: [("route", route), ("method", method), ("status", String(status))],
                factory: factory).increment()
        Metrics.Timer(label: "afa_http_request_duration_seconds", dimensions: [("route", route)], factory: factory)
            .recordNanoseconds(Int64(seconds * 1e9))
    }

    /// Samples the inference queue.
    func observe(_ queue: InferenceQueue) {
        inFlight.record(queue.inFlight)
        queued.record(queue.queued)
    }

    /// The text exposition format.
    public func exposition() -> String { registry.emitToString() }
}

/// Records every response (including errors) in `ServerMetrics`.
struct MetricsMiddleware: RouterMiddleware {
    typealias Context = AFARequestContext
    let metrics: ServerMetrics
    let queue: InferenceQueue

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        func seconds() -> Double {
            let d = ContinuousClock.now - start
            return Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
        }
        do {
            let response = try await next(request, context)
            metrics.record(route: context.routeName, method: request.method.rawValue, status: Int(response.status.code), seconds: seconds())
            metrics.observe(queue)
            return response
        } catch {
            let status = (error as? any HTTPResponseError)?.status.code ?? 500
            metrics.record(route: context.routeName, method: request.method.rawValue, status: Int(status), seconds: seconds())
            metrics.observe(queue)
            throw error
        }
    }
}
