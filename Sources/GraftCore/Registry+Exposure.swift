import Crypto
package import SafeTensors
import Synchronization

/// How much of an ancestor's checkpoint one of a layer group a descendant still holds.
public struct LayerExposure: Sendable, Codable, Equatable {
    /// The layer (a module prefix: the tensor names up to their last `.`), in the ancestor's names.
    public var name: String
    /// Every tensor of the ancestor's layer is in the descendant byte for byte, under the same name
    /// (and, for an adapter, no low-rank pair sits on it).
    public var identical: Bool
    /// The relative L2 drift ‖D − A‖ / ‖A‖ over the layer's floating-point tensors the descendant
    /// has with the ancestor's dtype and shape: 0 for an identical layer, `nil` where nothing could be
    /// compared or (digests only) the changed tensors' drift is not cached yet.
    public var drift: Double?
    /// The ancestor's bytes in the layer.
    public var bytes: Int
    /// True when an adapter's low-rank pair sits on the layer (its weights held, its function changed).
    public var adapted: Bool?

    package init(name: String, identical: Bool, drift: Double?, bytes: Int, adapted: Bool?) {
        self.name = name
        self.identical = identical
        self.drift = drift
        self.bytes = bytes
        self.adapted = adapted
    }
}

/// How much of an ancestor checkpoint a descendant checkpoint still carries (``Registry/exposure(of:to:detail:)``).
///
/// Exposure is read from digests alone: it says which of the ancestor's bytes the descendant
/// holds unchanged, exactly, at any distance. It does not say the rest is safe: a full fine-tune
/// holds none of them and still starts from them (drift says how far it moved).
public struct Exposure: Sendable, Codable, Equatable {
    /// The descendant checkpoint measured, `NAME@N`.
    public var checkpoint: String
    /// The ancestor checkpoint it is measured against, `NAME@N`.
    public var ancestor: String
    /// Bytes of the ancestor's tensors the descendant holds under the same name with the same
    /// digest, ÷ bytes of the ancestor's tensors (0 to 1).
    public var exposure: Double
    public var heldBytes: Int
    public var ancestorBytes: Int
    /// Leading layers (in the ancestor's order) that are identical.
    public var frozenDepth: Int
    /// The relative L2 drift over every compared tensor (identical ones count as 0); `nil` when
    /// some changed tensor's drift is not cached and only digests were read.
    public var drift: Double?
    public var layers: [LayerExposure]

    package init(
        checkpoint: String, ancestor: String, exposure: Double, heldBytes: Int, ancestorBytes: Int, frozenDepth: Int, drift: Double?,
        layers: [LayerExposure]
    ) {
        self.checkpoint = checkpoint
        self.ancestor = ancestor
        self.exposure = exposure
        self.heldBytes = heldBytes
        self.ancestorBytes = ancestorBytes
        self.frozenDepth = frozenDepth
        self.drift = drift
        self.layers = layers
    }
}

/// How much of exposure to compute: `digests` reads metadata only (drift where it is cached);
/// `drift` also reads the changed tensors' bytes once per blob pair, and caches the sums.
public enum ExposureDetail: String, Sendable, Codable, CaseIterable {
    case digests, drift
}

/// What a descendant checkpoint holds, in the terms exposure compares: its tensors by name; for an
/// adapter, its parent checkpoint's tensors with the adapter's `modules_to_save` copies in their
/// place, and the parent tensors its low-rank pairs sit on.
package struct HeldTensors: Sendable {
    package var tensors: [String: TensorEntry]
    /// Held tensor names an adapter's low-rank pair changes in function.
    package var adapted: Set<String> = []
    /// For each adapted tensor, its pair (`A`, `B`) and the PEFT module name the pair's scale is looked up by.
    package var pairs: [String: (a: TensorEntry, b: TensorEntry, module: String)] = [:]

    package init(_ tensors: [TensorEntry]) {
        self.tensors = Dictionary(tensors.map { ($0.name, $0) }) { first, _ in first }
    }

    /// An adapter checkpoint's tensors over its parent checkpoint's (``AdapterConfig/keyPrefix`` names).
    package init(adapter: [TensorEntry], parent: [TensorEntry]) {
        self.init(parent)
        let names = Set(parent.map(\.name))
        /// The parent tensor a PEFT module path names: itself, or without a task model's leading components.
        func parentName(_ path: String) -> String? {
            var components = path.split(separator: ".", omittingEmptySubsequences: false)
            while !components.isEmpty {
                let candidate = components.joined(separator: ".")
                if names.contains(candidate) { return candidate }
                components.removeFirst()
            }
            return nil
        }
        var halves: [String: (a: TensorEntry?, b: TensorEntry?)] = [:]
        for tensor in adapter {
            let name =
                tensor.name.hasPrefix(AdapterConfig.keyPrefix) ? String(tensor.name.dropFirst(AdapterConfig.keyPrefix.count)) : tensor.name
            let parts = name.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
            // A modules_to_save copy replaces the parent's tensor: `M.modules_to_save.ADAPTER.weight`.
            if let at = parts.firstIndex(of: "modules_to_save"), at + 2 < parts.count {
                if let target = parentName((parts[..<at] + parts[(at + 2)...]).joined(separator: ".")) { tensors[target] = tensor }
                continue
            }
            // A trained parent tensor (bias="all"): under its own name, or under `base_layer.`.
            if let target = parentName(parts.filter { $0 != "base_layer" }.joined(separator: ".")) {
                tensors[target] = tensor
                continue
            }
            // Anything else sits on a module: the longest path whose `.weight` the parent has.
            for end in stride(from: parts.count - 1, through: 1, by: -1) {
                let module = parts[..<end].joined(separator: ".")
                guard let target = parentName(module + ".weight") else { continue }
                adapted.insert(target)
                let key = parts[end]
                if key == "lora_A" || key == "lora_embedding_A" { halves[target, default: (nil, nil)].a = tensor }
                if key == "lora_B" || key == "lora_embedding_B" { halves[target, default: (nil, nil)].b = tensor }
                if halves[target]?.a != nil, halves[target]?.b != nil { pairs[target] = (halves[target]!.a!, halves[target]!.b!, module) }
                break
            }
        }
    }
}

/// The digest-only half of exposure, a pure function of the two tensor lists.
package enum ExposureMeasure {
    /// One ancestor tensor and the descendant's tensor of the same name, if any.
    package struct Match: Sendable {
        package var ancestor: TensorEntry
        package var descendant: TensorEntry?
        package var adapted: Bool
        package var held: Bool { descendant?.digest == ancestor.digest }
        /// Comparable for drift: floating point, the same dtype and shape.
        package var comparable: Bool {
            guard let descendant else { return false }
            return ExposureMeasure.floats.contains(ancestor.dtype) && descendant.dtype == ancestor.dtype
                && descendant.shape == ancestor.shape
        }
    }

    package static let floats: Set<DType> = [.f64, .f32, .f16, .bf16]

    /// The prefix the descendant names the ancestor's tensors under (a task model's `bert.`): of
    /// `""` and the prefixes its names put before the ancestor's largest tensor, the one that
    /// places the most ancestor tensors (the shorter on a tie).
    package static func prefix(ancestor: [TensorEntry], held: HeldTensors) -> String {
        guard let probe = ancestor.max(by: { $0.bytes < $1.bytes }) else { return "" }
        var candidates: Set<String> = [""]
        for name in held.tensors.keys where name.count > probe.name.count && name.hasSuffix("." + probe.name) {
            candidates.insert(String(name.dropLast(probe.name.count)))
        }
        guard candidates.count > 1 else { return "" }
        func placed(_ prefix: String) -> Int { ancestor.reduce(0) { $0 + (held.tensors[prefix + $1.name] == nil ? 0 : 1) } }
        return candidates.map { ($0, placed($0)) }.max { $0.1 != $1.1 ? $0.1 < $1.1 : $0.0.count > $1.0.count }!.0
    }

    /// The ancestor's layers in order: top-level modules as the ancestor's file first names them,
    /// each one's layers in numeric-aware name order (`layer.2` before `layer.10`).
    package static func layers(_ ancestor: [TensorEntry]) -> [(name: String, tensors: [TensorEntry])] {
        var rank: [Substring: Int] = [:]
        for tensor in ancestor {
            let top = tensor.name.split(separator: ".", maxSplits: 1).first ?? ""
            if rank[top] == nil { rank[top] = rank.count }
        }
        return LayerGroup.group(ancestor).map { ($0.layer, $0.tensors) }.sorted { x, y in
            let (rx, ry) = (
                rank[x.name.split(separator: ".", maxSplits: 1).first ?? ""] ?? 0,
                rank[y.name.split(separator: ".", maxSplits: 1).first ?? ""] ?? 0
            )
            return rx != ry ? rx < ry : numericAwareLess(x.name, y.name)
        }
    }

    /// The blob pairs drift compares.
    package static func pairs(_ layers: [(name: String, matches: [Match])]) -> [DriftPair] {
        layers.flatMap(\.matches).filter(\.comparable).map { match in
            DriftPair(ancestor: match.ancestor.digest, descendant: match.descendant!.digest, dtype: match.ancestor.dtype)
        }
    }

    /// Matches every ancestor tensor, by layer.
    /// - Parameter layers: ``layers(_:)`` of `ancestor`, when the caller has them (one family shares them).
    package static func match(
        ancestor: [TensorEntry], held: HeldTensors, layers given: [(name: String, tensors: [TensorEntry])]? = nil
    ) -> [(name: String, matches: [Match])] {
        let prefix = prefix(ancestor: ancestor, held: held)
        return (given ?? layers(ancestor)).map { layer in
            (
                layer.name,
                layer.tensors.map { tensor in
                    let name = prefix + tensor.name
                    return Match(ancestor: tensor, descendant: held.tensors[name], adapted: held.adapted.contains(name))
                }
            )
        }
    }
}

extension Registry {
    /// How much of `ancestor` (a checkpoint; a bare NAME is its newest) the checkpoint `descendant`
    /// still carries: see ``Exposure``. Any pair can be measured; between an ancestor and its
    /// descendant the number is exact at any distance (digests travel unchanged through frozen layers).
    public func exposure(of descendant: Reference, to ancestor: Reference, detail: ExposureDetail = .drift) async throws(GraftError)
        -> Exposure
    {
        let (d, dSummary) = try await resolve(descendant)
        let (a, aSummary) = try await resolve(ancestor)
        let row = try await metadata.chain(model: try await metadata.modelOf(checkpoint: d) ?? -1, full: false).first
        let adapterParent = row?.mode == TransferMode.adapter.rawValue ? row?.via : nil
        let rows = try await metadata.exposureRows(models: [], checkpoints: [d, a] + (adapterParent.map { [$0] } ?? []))
        let held =
            adapterParent.map { HeldTensors(adapter: rows.tensors[d] ?? [], parent: rows.tensors[$0] ?? []) }
            ?? HeldTensors(rows.tensors[d] ?? [])
        let layers = ExposureMeasure.match(ancestor: rows.tensors[a] ?? [], held: held)
        var sums = try await metadata.driftSums(ExposureMeasure.pairs(layers))
        return try await measure(
            held, layers: layers, of: dSummary.ref, label: aSummary.ref,
            adapter: adapterParent == nil ? nil : try Reference(parsing: dSummary.ref), detail: detail, sums: &sums)
    }

    /// Measures exposure of what a descendant holds against an ancestor's tensors.
    /// - Parameter adapter: the descendant checkpoint when it is an adapter's (its config gives the pairs' scales).
    /// - Parameter sums: the drift cache's rows for the comparable pairs, read by the caller
    ///   (``affected(_:exposure:)`` reads them for a whole family at once); with `.drift`, the
    ///   pairs computed here are added (and recorded in the store).
    /// - Parameter layers: what ``ExposureMeasure/match(ancestor:held:layers:)`` gives for the pair.
    func measure(
        _ held: HeldTensors, layers: [(name: String, matches: [ExposureMeasure.Match])], of checkpoint: String, label: String,
        adapter: Reference?, detail: ExposureDetail, sums: inout [DriftPair: DriftSums]
    ) async throws(GraftError) -> Exposure {
        let total = layers.reduce(0) { $0 + $1.matches.reduce(0) { $0 + $1.ancestor.bytes } }
        let heldBytes = layers.reduce(0) { $0 + $1.matches.reduce(0) { $0 + ($1.held ? $1.ancestor.bytes : 0) } }
        let identical = layers.map { layer in layer.matches.allSatisfy { $0.held && !$0.adapted } }
        // The sums of every comparable pair: cached, or (detail .drift) read from the blobs.
        // What an adapter's pairs add to what they sit on, Σ(scale·B·A)², by held tensor name.
        var lowRank: [String: Double] = [:]
        var unmeasurable: Set<DriftPair> = []
        if detail == .drift {
            var missing: [DriftPair: (TensorEntry, TensorEntry)] = [:]
            for match in layers.flatMap(\.matches) where match.comparable {
                let pair = DriftPair(ancestor: match.ancestor.digest, descendant: match.descendant!.digest, dtype: match.ancestor.dtype)
                if sums[pair] == nil { missing[pair] = (match.ancestor, match.descendant!) }
            }
            var fresh: [DriftPair: DriftSums] = [:]
            for (pair, value) in try await driftSums(Array(missing)) {
                // A tensor holding NaN or infinity has no drift: left unmeasured, not cached.
                if value.difference.isFinite && value.magnitude.isFinite { fresh[pair] = value } else { unmeasurable.insert(pair) }
            }
            try await metadata.recordDriftSums(fresh)
            sums.merge(fresh) { old, _ in old }
            if let adapter, !held.pairs.isEmpty {
                let config = try AdapterConfig.parse(try await smallFile(adapter, path: AdapterConfig.fileName))
                for (name, pair) in held.pairs {
                    let scale = config.scale(of: pair.module)
                    let added = scale * scale * (try await lowRankNormSquared(pair.a, pair.b))
                    if added.isFinite { lowRank[name] = added }
                }
            }
        }
        var measured: [LayerExposure] = []
        var (difference, magnitude, complete) = (0.0, 0.0, true)
        for (index, layer) in layers.enumerated() {
            var (layerDifference, layerMagnitude, layerComplete, compared) = (0.0, 0.0, true, false)
            for match in layer.matches where match.comparable {
                let pair = DriftPair(ancestor: match.ancestor.digest, descendant: match.descendant!.digest, dtype: match.ancestor.dtype)
                guard let value = sums[pair] else {
                    layerComplete = false
                    continue
                }
                if match.adapted {
                    guard let added = lowRank[match.descendant!.name] else {
                        layerComplete = false
                        continue
                    }
                    layerDifference += added
                }
                compared = true
                layerDifference += value.difference
                layerMagnitude += value.magnitude
            }
            difference += layerDifference
            magnitude += layerMagnitude
            complete = complete && layerComplete
            let drift: Double? =
                identical[index]
                ? 0 : (compared && layerComplete && layerMagnitude > 0 ? (layerDifference / layerMagnitude).squareRoot() : nil)
            measured.append(
                LayerExposure(
                    name: layer.name, identical: identical[index], drift: drift, bytes: layer.matches.reduce(0) { $0 + $1.ancestor.bytes },
                    adapted: layer.matches.contains(where: \.adapted) ? true : nil))
        }
        // Nothing compared moved: the drift is 0 without reading a byte (only the denominator is unknown).
        let compared = layers.flatMap(\.matches).filter(\.comparable)
        let unmoved = !compared.isEmpty && compared.allSatisfy { $0.held && !$0.adapted }
        return Exposure(
            checkpoint: checkpoint, ancestor: label, exposure: total == 0 ? 0 : Double(heldBytes) / Double(total), heldBytes: heldBytes,
            ancestorBytes: total, frozenDepth: identical.firstIndex(of: false) ?? identical.count,
            drift: unmoved ? 0 : complete && magnitude > 0 ? (difference / magnitude).squareRoot() : nil, layers: measured)
    }
}

// MARK: Reading blobs for drift

extension Registry {
    /// The drift sums of blob pairs, read in two lanes (the larger pairs first, each to the
    /// lighter lane), each pair's blobs side by side.
    /// - Throws: ``GraftError/damagedBlob(_:reason:)``.
    func driftSums(_ pairs: [(key: DriftPair, value: (TensorEntry, TensorEntry))]) async throws(GraftError) -> [DriftPair: DriftSums] {
        guard !pairs.isEmpty else { return [:] }
        let inline = try await metadata.inlineBytes(Array(Set(pairs.flatMap { [$0.value.0.digest, $0.value.1.digest] })))
        let results = Mutex<[DriftPair: DriftSums]>([:])
        let failure = Mutex<GraftError?>(nil)
        let lanes = BlobTransfer.balance(pairs.map { $0.value.0.bytes })
        let registry = self
        await BlobTransfer.inLanes(lanes.count) { lane, buffer in
            let second = UnsafeMutableRawPointer.allocate(byteCount: BlobTransfer.chunkSize, alignment: 64)
            defer { second.deallocate() }
            for index in lanes[lane] {
                if failure.withLock({ $0 != nil }) { return }
                let (pair, (ancestor, descendant)) = (pairs[index].key, pairs[index].value)
                do throws(GraftError) {
                    let value = try registry.driftSums(ancestor, descendant, inline: inline, buffers: (buffer, second))
                    results.withLock { $0[pair] = value }
                } catch {
                    failure.withLock { if $0 == nil { $0 = error } }
                    return
                }
            }
        }
        if let error = failure.withLock({ $0 }) { throw error }
        return results.withLock { $0 }
    }

    /// Σ(d − a)² and Σa² over two tensors of one dtype and length, streamed from their blobs side
    /// by side in chunks; both are checked against their digests.
    /// - Throws: ``GraftError/damagedBlob(_:reason:)``.
    func driftSums(
        _ ancestor: TensorEntry, _ descendant: TensorEntry, inline: [Digest: [UInt8]],
        buffers: (UnsafeMutableRawPointer, UnsafeMutableRawPointer)
    ) throws(GraftError) -> DriftSums {
        let width = max(1, ancestor.dtype.bitsPerElement / 8)
        let chunk = BlobTransfer.chunkSize
        let length = ancestor.bytes
        guard descendant.bytes == length else { return DriftSums(difference: .infinity, magnitude: 0) }
        var hashers = (SHA256(), SHA256())
        var sums = DriftSums(difference: 0, magnitude: 0)
        // Stored ones through a reader each (an encoded blob decodes chunk by chunk).
        var readers: [Digest: RawReader] = [:]
        func read(_ tensor: TensorEntry, at offset: Int, count: Int, into buffer: UnsafeMutableRawPointer) throws(GraftError) {
            if let bytes = inline[tensor.digest] {
                guard bytes.count == length else {
                    throw .damagedBlob(tensor.digest, reason: "it holds \(bytes.count) bytes, expected \(length)")
                }
                bytes.withUnsafeBytes { buffer.copyMemory(from: $0.baseAddress! + offset, byteCount: count) }
                return
            }
            if readers[tensor.digest] == nil { readers[tensor.digest] = try blobs.reader(tensor.digest, length: length) }
            try readers[tensor.digest]!.read(at: offset, count: count, into: buffer)
        }
        var offset = 0
        while offset < length {
            let count = min(chunk, length - offset)
            try read(ancestor, at: offset, count: count, into: buffers.0)
            try read(descendant, at: offset, count: count, into: buffers.1)
            hashers.0.update(bufferPointer: UnsafeRawBufferPointer(start: buffers.0, count: count))
            hashers.1.update(bufferPointer: UnsafeRawBufferPointer(start: buffers.1, count: count))
            DriftKernel.accumulate(buffers.0, buffers.1, elements: count / width, dtype: ancestor.dtype, into: &sums)
            offset += count
        }
        if Digest(hashers.0.finalize()) != ancestor.digest {
            throw .damagedBlob(ancestor.digest, reason: "its bytes no longer match the digest")
        }
        if ancestor.digest != descendant.digest, Digest(hashers.1.finalize()) != descendant.digest {
            throw .damagedBlob(descendant.digest, reason: "its bytes no longer match the digest")
        }
        return sums
    }

    /// ‖B·A‖² of a low-rank pair without forming the product: with A as [r, n] and B as [m, r]
    /// (a conv's or an embedding's factors reshaped so), ‖BA‖² = Σᵢⱼ (BᵀB)ᵢⱼ (AAᵀ)ᵢⱼ.
    func lowRankNormSquared(_ a: TensorEntry, _ b: TensorEntry) async throws(GraftError) -> Double {
        let inline = try await metadata.inlineBytes([a.digest, b.digest])
        let av = DriftKernel.doubles(try blobs.bytes(a.digest, length: a.bytes, inline: inline[a.digest]), a.dtype)
        let bv = DriftKernel.doubles(try blobs.bytes(b.digest, length: b.bytes, inline: inline[b.digest]), b.dtype)
        guard let r = a.shape.first, r > 0, av.count % r == 0, bv.count % r == 0 else { return .nan }
        let (n, m) = (av.count / r, bv.count / r)
        var total = 0.0
        for i in 0..<r {
            for j in 0..<r {
                var aa = 0.0
                for k in 0..<n { aa += av[i * n + k] * av[j * n + k] }
                var bb = 0.0
                for o in 0..<m { bb += bv[o * r + i] * bv[o * r + j] }
                total += aa * bb
            }
        }
        return total
    }
}

/// Reads tensor elements as doubles for drift.
package enum DriftKernel {
    static func accumulate(
        _ a: UnsafeMutableRawPointer, _ d: UnsafeMutableRawPointer, elements: Int, dtype: DType, into sums: inout DriftSums
    ) {
        var (difference, magnitude) = (0.0, 0.0)
        func run(_ value: (UnsafeMutableRawPointer, Int) -> Double) {
            for i in 0..<elements {
                let (x, y) = (value(a, i), value(d, i))
                difference += (y - x) * (y - x)
                magnitude += x * x
            }
        }
        switch dtype {
        case .f64: run { Double(bitPattern: UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: $1 * 8, as: UInt64.self))) }
        case .f32: run { Double(Float(bitPattern: UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: $1 * 4, as: UInt32.self)))) }
        case .f16:
            run { Double(Float(Float16(bitPattern: UInt16(littleEndian: $0.loadUnaligned(fromByteOffset: $1 * 2, as: UInt16.self))))) }
        case .bf16:
            run { Double(Float(bitPattern: UInt32(UInt16(littleEndian: $0.loadUnaligned(fromByteOffset: $1 * 2, as: UInt16.self))) << 16)) }
        default: return
        }
        sums.difference += difference
        sums.magnitude += magnitude
    }

    package static func doubles(_ bytes: [UInt8], _ dtype: DType) -> [Double] {
        bytes.withUnsafeBytes { raw in
            let base = UnsafeMutableRawPointer(mutating: raw.baseAddress!)
            let count = bytes.count / max(1, dtype.bitsPerElement / 8)
            return (0..<count).map { i in
                switch dtype {
                case .f64: Double(bitPattern: UInt64(littleEndian: base.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self)))
                case .f32: Double(Float(bitPattern: UInt32(littleEndian: base.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self))))
                case .f16:
                    Double(Float(Float16(bitPattern: UInt16(littleEndian: base.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self)))))
                case .bf16:
                    Double(
                        Float(bitPattern: UInt32(UInt16(littleEndian: base.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self))) << 16))
                default: .nan
                }
            }
        }
    }
}
