import Hummingbird

/// The request context of every route: Hummingbird's core storage plus the route's name, set by the
/// router so that the metrics middleware can label requests by route rather than by raw path.
public struct AFARequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage

    public init(source: Source) {
        coreContext = .init(source: source)
    }

    /// The matched route's pattern (e.g. `/v1/segment`), or "unmatched".
    public var routeName: String { endpointPath ?? "unmatched" }
}
