import Foundation
import GraftTestSupport
import Testing

@testable import Trainer

private func idx(magic: UInt32, dimensions: [UInt32], payload: [UInt8]) -> [UInt8] {
    func word(_ value: UInt32) -> [UInt8] { [24, 16, 8, 0].map { UInt8(truncatingIfNeeded: value >> $0) } }
    return word(magic) + dimensions.flatMap(word) + payload
}

@Suite("Datasets")
struct DataTests {
    @Test("IDX files load, plain or gzipped, pixels scaled to [0, 1]")
    func idxFiles() throws {
        let directory = TemporaryDirectory()
        try writeFile(
            directory.file("train-images-idx3-ubyte"),
            idx(magic: 0x803, dimensions: [3, 2, 2], payload: [0, 255, 51, 102, 1, 2, 3, 4, 5, 6, 7, 8]))
        try writeFile(directory.file("train-labels-idx1-ubyte"), idx(magic: 0x801, dimensions: [3], payload: [4, 0, 4]))
        let data = try Dataset.load(directory.path)
        #expect(data.sampleShape == [1, 2, 2] && data.labels == [4, 0, 4] && data.classes == [0, 4])
        #expect(data.features[0...3] == [0, 1, 0.2, 0.4])
        let gz = try runProcess("/bin/gzip", [directory.file("train-images-idx3-ubyte")])
        #expect(gz.status == 0)
        #expect(try Dataset.load(directory.path).features == data.features)
    }

    @Test(
        "damaged IDX files are refused with the reason",
        arguments: [
            ("bad magic", idx(magic: 0x802, dimensions: [1, 1, 1], payload: [0]), "magic"),
            ("truncated", idx(magic: 0x803, dimensions: [2, 2, 2], payload: [0, 1, 2]), "holds"),
        ])
    func damagedIDX(_ label: String, _ images: [UInt8], _ message: String) throws {
        let directory = TemporaryDirectory()
        try writeFile(directory.file("train-images-idx3-ubyte"), images)
        try writeFile(directory.file("train-labels-idx1-ubyte"), idx(magic: 0x801, dimensions: [2], payload: [0, 1]))
        #expect { try Dataset.load(directory.path) } throws: { "\($0)".contains(message) }
    }

    @Test("a directory without IDX files, and a path that does not exist")
    func missing() throws {
        let directory = TemporaryDirectory()
        #expect { try Dataset.load(directory.path) } throws: { "\($0)".contains("train-images-idx3-ubyte") }
        #expect { try Dataset.load(directory.file("nope")) } throws: { "\($0)".contains("does not exist") }
    }

    @Test("CSV: label then features, header skipped; bad rows named by line")
    func csv() throws {
        let directory = TemporaryDirectory()
        try writeFile(directory.file("ok.csv"), Array("label,a,b\n1,0.5,2\n0,1,-1\n".utf8))
        let data = try Dataset.load(directory.file("ok.csv"))
        #expect(data.sampleShape == [2] && data.labels == [1, 0] && data.features == [0.5, 2, 1, -1])
        for (text, message) in [("1,2\n0,1,2\n", "line 2"), ("1,nan\n", "finite"), ("1,2\nx,3\n", "line 2"), ("", "no samples")] {
            try writeFile(directory.file("bad.csv"), Array(text.utf8))
            #expect { try Dataset.load(directory.file("bad.csv")) } throws: { "\($0)".contains(message) }
        }
    }

    @Test("class ranges parse; bad ones are refused")
    func classes() throws {
        #expect(try DataSelection.parseClasses("5-9") == [5, 6, 7, 8, 9])
        #expect(try DataSelection.parseClasses("0,2,4-5") == [0, 2, 4, 5])
        for bad in ["9-5", "a", "3", "1-"] { #expect(throws: TrainerError.self) { try DataSelection.parseClasses(bad) } }
    }

    @Test("the split is seeded and stratified: validation per class first, then the label budget, relabelled 0…k−1")
    func split() throws {
        let labels = (0..<300).map { $0 % 3 }
        let data = Dataset(sampleShape: [1], features: (0..<300).map(Float.init), labels: labels, classes: [0, 1, 2])
        let selection = DataSelection(classes: [1, 2], perClass: 7, validationPerClass: 10, seed: 5)
        let (train, validation) = try selection.split(data)
        #expect(train.count == 14 && validation.count == 20)
        #expect(train.labels.filter { $0 == 0 }.count == 7 && validation.labels.filter { $0 == 1 }.count == 10)
        #expect(train.classes == [1, 2])
        // Relabelled: a train sample labelled 0 came from source class 1.
        for (value, label) in zip(train.features, train.labels) { #expect(Int(value) % 3 == label + 1) }
        #expect(Set(train.features).isDisjoint(with: Set(validation.features)))
        let again = try selection.split(data)
        #expect(again.train.features == train.features)
        let other = try DataSelection(classes: [1, 2], perClass: 7, validationPerClass: 10, seed: 6).split(data)
        #expect(other.train.features != train.features)
        #expect { try DataSelection(classes: [1, 7]).split(data) } throws: { "\($0)".contains("class 7") }
    }
}
