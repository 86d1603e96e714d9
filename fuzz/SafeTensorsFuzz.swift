// libFuzzer entry point for the safetensors parser (`make fuzz SECONDS=…`).
//
// Each input is a whole file: the 8-byte length prefix, then the header; the parser must either
// accept it (and then every tensor's span lies inside the data and the header re-serialises)
// or throw a SafeTensorsError — never crash, trap, hang or read out of bounds (ASan watches).

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    guard let length = try? SafeTensorsHeader.headerLength(prefix: Array(bytes.prefix(8)), fileSize: size) else { return 0 }
    guard size >= 8 + length else { return 0 }
    guard let header = try? SafeTensorsHeader.parse(json: Array(bytes[8..<(8 + length)]), fileSize: size) else { return 0 }
    let dataLength = size - 8 - length
    // Exact coverage: the spans tile the data with no gap or overlap.
    let spans = header.tensors.map(\.dataOffsets).sorted { $0.lowerBound < $1.lowerBound }
    var end = 0
    for span in spans {
        precondition(span.lowerBound == end, "accepted a gap or an overlap")
        end = span.upperBound
    }
    precondition(end == dataLength, "accepted data the tensors do not cover")
    for tensor in header.tensors {
        precondition(tensor.dataOffsets.lowerBound >= 0 && tensor.dataOffsets.upperBound <= dataLength, "accepted a span outside the data")
        let expected = try? tensor.dtype.byteCount(of: tensor.shape, tensor: tensor.name)
        precondition(expected == tensor.byteCount, "accepted a span that disagrees with its dtype and shape")
    }
    return 0
}
