// swift-tools-version:6.2
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
    .treatAllWarnings(as: .error),
]

let package = Package(
    // Linux only (Glibc, Linux `sendfile`): no Apple platform is declared.
    name: "Graft",
    products: [
        .library(name: "SafeTensors", targets: ["SafeTensors"]),
        .library(name: "Graft", targets: ["Graft"]),
        .library(name: "Trainer", targets: ["Trainer"]),
        .executable(name: "graft", targets: ["GraftCLI"]),
    ],
    dependencies: [
        .package(url: "https://github.com/groue/GRDB.swift", exact: "7.10.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", exact: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto", exact: "3.12.3"),
        .package(url: "https://github.com/jpsim/Yams", exact: "6.2.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", exact: "2.28.1"),
        .package(url: "https://github.com/swift-server/async-http-client", exact: "1.37.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", exact: "2.13.0"),
        .package(url: "https://github.com/apple/swift-log", exact: "1.16.2"),
        .package(url: "https://github.com/apple/swift-http-types", exact: "1.8.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.2"),
        .package(url: "https://github.com/vapor/postgres-nio", exact: "1.33.2"),
    ],
    targets: [
        // The safetensors format: parse, validate, write. Depends on nothing of ours.
        .target(name: "SafeTensors", swiftSettings: strict),
        // The registry core: domain types, policies, the `Registry` façade and the two store
        // protocols (MetadataStore, BlobStore). Imports neither GRDB nor Glibc.
        .target(
            name: "GraftCore",
            dependencies: [
                "SafeTensors", "CZstd",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: strict
        ),
        // Local files: fsync'd writes, renames, the crash-injection point, the local blob store.
        .target(name: "GraftLocal", dependencies: ["GraftCore", "SafeTensors"], swiftSettings: strict),
        // The SQLite metadata store: its SQL, migrations and C-API stepping.
        .target(
            name: "GraftSQLite",
            dependencies: [
                "GraftCore",
                "GraftLocal",
                "SafeTensors",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "GRDBSQLite", package: "GRDB.swift"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strict,
            plugins: ["EmbedMigrations"]
        ),
        // The registry library as users import it: the core, and a registry in a local directory
        // (SQLite + local blobs, or blobs in an S3 bucket) or in PostgreSQL, opened from a path or
        // a configuration.
        .target(
            name: "Graft",
            dependencies: ["GraftCore", "GraftLocal", "GraftSQLite", "GraftS3", "GraftPostgres", "SafeTensors", "COpenBLAS"],
            swiftSettings: strict),
        // The HTTP API of `graft serve` (Hummingbird 2): routes, tokens, the upload protocol.
        .target(
            name: "GraftServer",
            dependencies: [
                "GraftCore",
                "SafeTensors",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            // The OpenAPI document served at /v1/openapi.json (docs/openapi.json links to it); the web
            // view's stylesheet and script.
            resources: [.embedInCode("openapi.json"), .embedInCode("Web/graft.css"), .embedInCode("Web/graft.js")],
            swiftSettings: strict
        ),
        // The client side of that API (AsyncHTTPClient): the CLI's `--registry http(s)://…`.
        .target(
            name: "GraftRemote",
            dependencies: [
                "GraftCore",
                "SafeTensors",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: strict
        ),
        // S3-compatible storage (issue 14): Signature Version 4 and the S3 operations a blob store needs.
        .target(
            name: "GraftS3",
            dependencies: [
                "GraftCore", "GraftLocal",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        // The PostgreSQL metadata store (issue 14), on PostgresNIO: its SQL, migrations over
        // migrations/postgres/, and the connection pool several servers share a database through.
        .target(
            name: "GraftPostgres",
            dependencies: [
                "GraftCore", "GraftLocal", "SafeTensors",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strict,
            plugins: ["EmbedMigrations"]
        ),
        // System libraries: OpenBLAS for dense math, zlib for gzipped datasets, zstd for the
        // stored encodings of blobs (`graft compact`).
        .systemLibrary(name: "COpenBLAS", providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CZstd", providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "CZlib", providers: [.apt(["zlib1g-dev"])]),
        // The training engine: layers, optimisers, datasets; reads bases from and commits
        // checkpoints to the registry.
        .target(name: "Trainer", dependencies: ["GraftCore", "SafeTensors", "COpenBLAS", "CZlib"], swiftSettings: strict),
        // The command-line tool: parse, call the library, print.
        .executableTarget(
            name: "GraftCLI",
            dependencies: [
                "Graft",
                "SafeTensors",
                "Trainer",
                "GraftServer",
                "GraftRemote",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // `make bench-scale`: a synthetic registry through the library API, and query latencies.
        // `make bench-train`: GEMM through the engine vs OpenBLAS, samples/s per transfer mode.
        .executableTarget(
            name: "graft-train-bench", dependencies: ["Trainer", "Graft", "COpenBLAS"], path: "benchmarks/train", swiftSettings: strict),
        // `make bench-compress`: the stored encodings' ratio and one-core encode/decode speeds.
        .executableTarget(name: "graft-codec-bench", dependencies: ["GraftCore"], path: "benchmarks/codec", swiftSettings: strict),
        // `make results`: the transferability experiment (docs/RESULTS.md).
        // What the two experiments share: options, training a student per transfer mode, evaluation.
        .target(
            name: "ExperimentSupport", dependencies: ["Trainer", "Graft", "SafeTensors"], path: "benchmarks/experiment",
            swiftSettings: strict),
        .executableTarget(
            name: "graft-results", dependencies: ["ExperimentSupport", "Trainer", "Graft", "SafeTensors"], path: "benchmarks/results",
            swiftSettings: strict),
        // `make results-vulnerability`: the mimicry attack on students (docs/RESULTS.md, docs/vulnerability.json).
        .executableTarget(
            name: "graft-vulnerability", dependencies: ["ExperimentSupport", "Trainer", "Graft", "SafeTensors"],
            path: "benchmarks/vulnerability",
            swiftSettings: strict),
        // The concurrency harness's writer, reader and gc processes (tests and `make soak`).
        .executableTarget(name: "graft-stress", dependencies: ["Graft", "SafeTensors"], path: "benchmarks/stress", swiftSettings: strict),
        .executableTarget(
            name: "graft-scale-bench", dependencies: ["Graft", "SafeTensors"], path: "benchmarks/scale", swiftSettings: strict),
        // `make bench`: how fast a checkpoint opens in place.
        .executableTarget(
            name: "graft-open-bench", dependencies: ["Graft", "SafeTensors"], path: "benchmarks/open", swiftSettings: strict),
        // Build-time helper: turns migrations/*.sql into Swift string literals.
        .executableTarget(name: "MigrationEmbedder"),
        .plugin(
            name: "EmbedMigrations",
            capability: .buildTool(),
            dependencies: ["MigrationEmbedder"]
        ),
        // Helpers shared by the test targets (temporary directories, processes, reference Python).
        // glibc's close-from spawn action and pipe2 for the tests' ChildProcess (need _GNU_SOURCE).
        .target(name: "CSpawn"),
        .target(
            name: "GraftTestSupport",
            dependencies: ["SafeTensors", "GraftCore", "Graft", "CSpawn", .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: strict
        ),
        .testTarget(name: "SafeTensorsTests", dependencies: ["SafeTensors", "GraftTestSupport"], swiftSettings: strict),
        .testTarget(
            name: "GraftTests",
            dependencies: [
                "Graft", "GraftCore", "GraftLocal", "GraftSQLite", "GraftS3", "GraftPostgres", "SafeTensors", "GraftTestSupport",
                .product(name: "GRDB", package: "GRDB.swift"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "GraftServerTests",
            dependencies: [
                "GraftServer", "Graft", "SafeTensors", .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "GraftS3Tests", dependencies: ["GraftS3", "Graft", "GraftTestSupport"], exclude: ["sigv4-suite"], swiftSettings: strict),
        .testTarget(name: "TrainerTests", dependencies: ["Trainer", "Graft", "SafeTensors", "GraftTestSupport"], swiftSettings: strict),
        .testTarget(
            name: "GraftCLITests",
            dependencies: [
                "GraftCLI", "Graft", "GraftS3", "GraftRemote", "SafeTensors", "GraftTestSupport", .product(name: "Yams", package: "Yams"),
            ], swiftSettings: strict),
    ]
)
