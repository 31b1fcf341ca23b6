import TensorCore

/// A layer or a network of layers: immutable structure and shared weights, no per-call state.
///
/// Parameters, buffers and child modules are found by reflection over the stored properties (in
/// declaration order, which is the state-dict order), as mlx-swift's `Module` does: no layer lists
/// them by hand. What a pass needs besides its inputs — train or eval mode, the random stream, the
/// activations kept for backward and the gradient store — travels in a `Workspace` the caller owns,
/// so one module can serve any number of concurrent passes.
public protocol Module: AnyObject, Sendable {}

extension Module {
    /// Direct child modules in declaration order (through optionals and nested arrays).
    public var children: [any Module] {
        var out: [any Module] = []
        for child in Mirror(reflecting: self).children { collectModules(child.value, into: &out) }
        return out
    }

    /// Every trainable parameter of this module and its descendants, in state-dict order.
    public var parameters: [Parameter] { leaves(Parameter.self) }

    /// Every buffer of this module and its descendants.
    public var buffers: [Buffer] { leaves(Buffer.self) }

    /// Every counter of this module and its descendants.
    public var counters: [Counter] { leaves(Counter.self) }

    /// Calls `body` on this module, then on each descendant, depth first in declaration order.
    public func visit(_ body: (any Module) -> Void) {
        body(self)
        for c in children { c.visit(body) }
    }

    /// The stored values of type `T` of this module and its descendants, depth first.
    func leaves<T: AnyObject>(_ type: T.Type) -> [T] {
        var out: [T] = []
        visit { module in
            for child in Mirror(reflecting: module).children { collectLeaves(child.value, into: &out) }
        }
        return out
    }
}

// Reflection helpers: a stored property is a leaf (Parameter, Buffer, Counter), a module, or a
// container (Optional, Array) whose elements are looked at in turn.
private func collectModules(_ value: Any, into out: inout [any Module]) {
    if let m = value as? any Module { out.append(m); return }
    forEachElement(value) { collectModules($0, into: &out) }
}

private func collectLeaves<T: AnyObject>(_ value: Any, into out: inout [T]) {
    if value is any Module { return }   // a child's own leaves are collected when it is visited
    if let leaf = value as? T { out.append(leaf); return }
    forEachElement(value) { collectLeaves($0, into: &out) }
}

private func forEachElement(_ value: Any, _ body: (Any) -> Void) {
    let mirror = Mirror(reflecting: value)
    switch mirror.displayStyle {
    case .optional?, .collection?:
        for c in mirror.children { body(c.value) }
    default:
        break
    }
}
