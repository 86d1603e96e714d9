import CZlib
import Foundation
import GraftCore

/// Labelled samples: `features` holds `count` samples of `sampleShape`, row after row.
public struct Dataset: Sendable {
    public var sampleShape: [Int]
    public var features: [Float]
    public var labels: [Int]
    /// What each label means in the source (after `select`, label i is `classes[i]`).
    public var classes: [Int]

    public var count: Int { labels.count }
    public var sampleSize: Int { sampleShape.reduce(1, *) }

    public init(sampleShape: [Int], features: [Float], labels: [Int], classes: [Int]) {
        self.sampleShape = sampleShape
        self.features = features
        self.labels = labels
        self.classes = classes
    }

    /// The samples at `indices`, as a batch tensor with their labels.
    public func batch(_ indices: ArraySlice<Int>) -> (Tensor, [Int]) {
        let size = sampleSize
        var data = [Float](repeating: 0, count: indices.count * size)
        data.withUnsafeMutableBufferPointer { out in
            features.withUnsafeBufferPointer { source in
                for (row, index) in indices.enumerated() {
                    (out.baseAddress! + row * size).update(from: source.baseAddress! + index * size, count: size)
                }
            }
        }
        return (Tensor(shape: [indices.count] + sampleShape, data: data), indices.map { labels[$0] })
    }

    /// The samples at `indices`, labels kept.
    public func subset(_ indices: [Int]) -> Dataset {
        let (tensor, labels) = batch(indices[...])
        return Dataset(sampleShape: sampleShape, features: tensor.data, labels: labels, classes: classes)
    }

    // MARK: Loading

    /// Loads IDX files (MNIST / Fashion-MNIST layout, gzipped or not) from a directory holding
    /// `train-images-idx3-ubyte[.gz]` and `train-labels-idx1-ubyte[.gz]` (`t10k-…` with
    /// `test: true`), or a CSV file (first column the label, then the features; gzipped or not;
    /// a header line is skipped). Pixels are scaled to [0, 1].
    public static func load(_ path: String, test: Bool = false) throws(TrainerError) -> Dataset {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { throw .data("\(path) does not exist") }
        if isDirectory.boolValue {
            let prefix = test ? "t10k" : "train"
            func find(_ stem: String) throws(TrainerError) -> String {
                for candidate in ["\(stem)", "\(stem).gz"] where FileManager.default.fileExists(atPath: "\(path)/\(candidate)") {
                    return "\(path)/\(candidate)"
                }
                throw .data("\(path) has no \(stem)[.gz]; expected IDX files as MNIST ships them")
            }
            return try loadIDX(images: try find("\(prefix)-images-idx3-ubyte"), labels: try find("\(prefix)-labels-idx1-ubyte"))
        }
        return try loadCSV(path)
    }

    /// Reads a whole file through zlib, which passes plain files through unchanged.
    static func readMaybeGzipped(_ path: String, limit: Int = 1 << 31) throws(TrainerError) -> [UInt8] {
        guard let file = gzopen(path, "rb") else { throw .data("cannot open \(path)") }
        defer { gzclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let read = chunk.withUnsafeMutableBytes { gzread(file, $0.baseAddress, UInt32($0.count)) }
            if read < 0 { throw .data("\(path) is damaged (gzip: \(String(cString: gzerror(file, nil))))") }
            if read == 0 { break }
            bytes.append(contentsOf: chunk[0..<Int(read)])
            if bytes.count > limit { throw .data("\(path) is larger than \(limit) bytes uncompressed") }
        }
        return bytes
    }

    static func loadIDX(images imagesPath: String, labels labelsPath: String) throws(TrainerError) -> Dataset {
        let images = try readMaybeGzipped(imagesPath), labels = try readMaybeGzipped(labelsPath)
        func word(_ bytes: [UInt8], _ offset: Int) -> Int {
            bytes[offset..<offset + 4].reduce(0) { $0 << 8 | Int($1) }
        }
        guard images.count >= 16, word(images, 0) == 0x0000_0803 else {
            throw .data("\(imagesPath) is not an IDX file of 3-D unsigned bytes (magic 0x00000803)")
        }
        guard labels.count >= 8, word(labels, 0) == 0x0000_0801 else {
            throw .data("\(labelsPath) is not an IDX file of 1-D unsigned bytes (magic 0x00000801)")
        }
        let count = word(images, 4), rows = word(images, 8), columns = word(images, 12)
        guard rows > 0, columns > 0, rows <= 4096, columns <= 4096, images.count == 16 + count * rows * columns else {
            throw .data("\(imagesPath): the header says \(count) images of \(rows)×\(columns), the file holds \(images.count - 16) bytes")
        }
        guard word(labels, 4) == count, labels.count == 8 + count else {
            throw .data("\(labelsPath) holds \(labels.count - 8) labels for \(count) images")
        }
        let features = images[16...].map { Float($0) / 255 }
        let labelValues = labels[8...].map(Int.init)
        return Dataset(sampleShape: [1, rows, columns], features: features, labels: labelValues, classes: Array(Set(labelValues)).sorted())
    }

    static func loadCSV(_ path: String) throws(TrainerError) -> Dataset {
        let text = String(decoding: try readMaybeGzipped(path), as: UTF8.self)
        var features: [Float] = []
        var labels: [Int] = []
        var width: Int? = nil
        for (number, line) in text.split(omittingEmptySubsequences: true, whereSeparator: \.isNewline).enumerated() {
            let fields = line.split(separator: ",", omittingEmptySubsequences: false)
            guard let label = Int(fields[0].trimmingCharacters(in: .whitespaces)), label >= 0 else {
                if number == 0 { continue }  // a header
                throw .data("\(path) line \(number + 1): the first field must be a class label (a whole number ≥ 0), not `\(fields[0])`")
            }
            let values = fields.dropFirst().map { Float($0.trimmingCharacters(in: .whitespaces)) }
            guard values.allSatisfy({ $0?.isFinite ?? false }) else {
                throw .data("\(path) line \(number + 1): every feature must be a finite number")
            }
            guard width == nil || width == values.count else {
                throw .data("\(path) line \(number + 1): \(values.count) features, earlier lines have \(width!)")
            }
            guard !values.isEmpty else { throw .data("\(path) line \(number + 1): no features after the label") }
            width = values.count
            features.append(contentsOf: values.map { $0! })
            labels.append(label)
        }
        guard let width, !labels.isEmpty else { throw .data("\(path) holds no samples") }
        return Dataset(sampleShape: [width], features: features, labels: labels, classes: Array(Set(labels)).sorted())
    }
}

/// Which samples train and which validate.
public struct DataSelection: Sendable, Equatable, Codable {
    /// Source labels to keep, relabelled 0…k−1 in ascending order; nil keeps all.
    public var classes: [Int]?
    /// At most this many training samples per class (the label budget); nil keeps all.
    public var perClass: Int?
    /// Samples per class held out for validation before the budget is taken.
    public var validationPerClass: Int
    public var seed: UInt64

    public init(classes: [Int]? = nil, perClass: Int? = nil, validationPerClass: Int = 300, seed: UInt64 = 0) {
        self.classes = classes
        self.perClass = perClass
        self.validationPerClass = validationPerClass
        self.seed = seed
    }

    /// Parses `5-9`, `0,2,4` or `0-2,7`.
    public static func parseClasses(_ text: String) throws(TrainerError) -> [Int] {
        var result: [Int] = []
        for part in text.split(separator: ",") {
            let bounds = part.split(separator: "-", omittingEmptySubsequences: false).map { Int($0.trimmingCharacters(in: .whitespaces)) }
            switch bounds.count {
            case 1 where bounds[0] != nil && bounds[0]! >= 0: result.append(bounds[0]!)
            case 2 where bounds[0] != nil && bounds[1] != nil && 0 <= bounds[0]! && bounds[0]! <= bounds[1]!:
                result.append(contentsOf: bounds[0]!...bounds[1]!)
            default: throw .data("--classes takes labels and ranges such as `5-9` or `0,2,4`, not `\(part)`")
            }
        }
        let unique = Array(Set(result)).sorted()
        guard unique.count >= 2 else { throw .data("--classes must name at least two classes") }
        return unique
    }

    /// Splits `data`: a seeded, stratified validation set of `validationPerClass` per class,
    /// then up to `perClass` training samples per class from the rest.
    public func split(_ data: Dataset) throws(TrainerError) -> (train: Dataset, validation: Dataset) {
        let chosen = classes ?? data.classes
        let missing = chosen.filter { !data.classes.contains($0) }
        guard missing.isEmpty else {
            throw .data(
                """
                the data has no samples of class \(missing.map(String.init).joined(separator: ", ")); it has\
                 \(data.classes.map(String.init).joined(separator: ", "))
                """
            )
        }
        var byClass = [Int: [Int]]()
        for (index, label) in data.labels.enumerated() { byClass[label, default: []].append(index) }
        var generator = SeededGenerator(seed: seed)
        var train: [Int] = [], validation: [Int] = []
        var trainLabels: [Int] = [], validationLabels: [Int] = []
        for (newLabel, label) in chosen.enumerated() {
            var indices = byClass[label] ?? []
            indices.shuffle(using: &generator)
            let held = min(validationPerClass, indices.count / 2)
            validation += indices[..<held]
            validationLabels += Array(repeating: newLabel, count: held)
            let rest = indices[held...]
            let taken = perClass.map { rest.prefix($0) } ?? rest
            train += taken
            trainLabels += Array(repeating: newLabel, count: taken.count)
        }
        guard !train.isEmpty else { throw .data("no training samples are left") }
        var trainSet = data.subset(train), validationSet = data.subset(validation)
        trainSet.labels = trainLabels
        validationSet.labels = validationLabels
        trainSet.classes = chosen
        validationSet.classes = chosen
        return (trainSet, validationSet)
    }
}
