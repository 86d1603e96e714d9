/// Tensors readable in place, without copying: a mapped file (``MappedSafeTensors``), or a
/// registry checkpoint whose tensors are mapped blob by blob.
///
/// ```swift
/// func total(_ source: some SafeTensorsSource) -> Int {
///     source.header.tensors.reduce(0) { sum, tensor in sum + source.withData(of: tensor) { $0.count } }
/// }
/// ```
public protocol SafeTensorsSource: Sendable {
    /// The parsed header: tensor names, dtypes, shapes and offsets, in data order.
    var header: SafeTensorsHeader { get }
    /// Where the tensors come from, for messages: a path, or `NAME@N`.
    var origin: String { get }
    /// Calls `body` with the tensor's bytes, in place; they are valid only inside `body`.
    func withData<R>(of tensor: TensorInfo, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R
}

extension MappedSafeTensors: SafeTensorsSource {
    public var origin: String { path }
}
