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
        for child in Mirror(reflecting: self).children { collect(child.value, modules: &out) }
        return out
    }

    /// Every trainable parameter of this module and its descendants, in state-dict order.
    public var parameters: [Parameter] {
        var out: [Parameter] = []
        visit { module in
            for child in Mirror(reflecting: module).children { collect(child.value, parameters: &out) }
        }
        return out
    }

    /// Every buffer of this module and its descendants.
    public var buffers: [Buffer] {
        var out: [Buffer] = []
        visit { module in
            for child in Mirror(reflecting: module).children { collect(child.value, buffers: &out) }
        }
        return out
    }

    /// Every counter of this module and its descendants.
    public var counters: [Counter] {
        var out: [Counter] = []
        visit { module in
            for child in Mirror(reflecting: module).children { collect(child.value, counters: &out) }
        }
        return out
    }

    /// Calls `body` on this module, then on each descendant, depth first in declaration order.
    public func visit(_ body: (any Module) -> Void) {
        body(self)
        for c in children { c.visit(body) }
    }
}

// Reflection helpers: a stored property is a leaf (Parameter, Buffer, Counter, Module) or a container
// (Optional, Array) whose elements are looked at in turn.
private func collect(_ value: Any, modules: inout [any Module]) {
    if let m = value as? any Module { modules.append(m); return }
    forEachElement(value) { collect($0, modules: &modules) }
}

private func collect(_ value: Any, parameters: inout [Parameter]) {
    if let p = value as? Parameter { parameters.append(p); return }
    if value is any Module { return }   // a child's parameters are collected when it is visited
    forEachElement(value) { collect($0, parameters: &parameters) }
}

private func collect(_ value: Any, buffers: inout [Buffer]) {
    if let b = value as? Buffer { buffers.append(b); return }
    if value is any Module { return }
    forEachElement(value) { collect($0, buffers: &buffers) }
}

private func collect(_ value: Any, counters: inout [Counter]) {
    if let c = value as? Counter { counters.append(c); return }
    if value is any Module { return }
    forEachElement(value) { collect($0, counters: &counters) }
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
