// swift-tools-version:6.2
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
    .treatAllWarnings(as: .error),
]

let package = Package(
    name: "Graft",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "SafeTensors", targets: ["SafeTensors"]),
        .library(name: "Graft", targets: ["Graft"]),
        .executable(name: "graft", targets: ["GraftCLI"]),
    ],
    dependencies: [
        .package(url: "https://github.com/groue/GRDB.swift", exact: "7.10.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", exact: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto", exact: "3.12.3"),
        .package(url: "https://github.com/jpsim/Yams", exact: "6.2.2"),
    ],
    targets: [
        // The safetensors format: parse, validate, write. Depends on nothing of ours.
        .target(name: "SafeTensors", swiftSettings: strict),
        // The registry library.
        .target(
            name: "Graft",
            dependencies: [
                "SafeTensors",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "GRDBSQLite", package: "GRDB.swift"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: strict,
            plugins: ["EmbedMigrations"]
        ),
        // The command-line tool: parse, call the library, print.
        .executableTarget(
            name: "GraftCLI",
            dependencies: [
                "Graft",
                "SafeTensors",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),
        // `make bench-scale`: a synthetic registry through the library API, and query latencies.
        .executableTarget(name: "graft-scale-bench", dependencies: ["Graft", "SafeTensors"], path: "benchmarks/scale", swiftSettings: strict),
        // Build-time helper: turns migrations/*.sql into Swift string literals.
        .executableTarget(name: "MigrationEmbedder"),
        .plugin(
            name: "EmbedMigrations",
            capability: .buildTool(),
            dependencies: ["MigrationEmbedder"]
        ),
        // Helpers shared by the test targets (temporary directories, processes, reference Python).
        .target(
            name: "GraftTestSupport",
            dependencies: ["SafeTensors", "Graft", .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: strict
        ),
        .testTarget(name: "SafeTensorsTests", dependencies: ["SafeTensors", "GraftTestSupport"], swiftSettings: strict),
        .testTarget(
            name: "GraftTests",
            dependencies: ["Graft", "SafeTensors", "GraftTestSupport", .product(name: "GRDB", package: "GRDB.swift")],
            swiftSettings: strict
        ),
        .testTarget(name: "GraftCLITests", dependencies: ["GraftCLI", "Graft", "SafeTensors", "GraftTestSupport", .product(name: "Yams", package: "Yams")], swiftSettings: strict),
    ]
)
