// swift-tools-version:6.1
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

// Release links lay out first the functions each process's loop runs (build-support/hot-functions.txt,
// written by scripts/hot-functions), so a process keeps fewer of the 64 KiB fault-around blocks of code
// resident; lld orders by symbol, each of our functions in its own section (the Swift runtime's and the
// standard library's public functions come so; its internal ones cannot move). A symbol the build no
// longer has is skipped. SwiftPM does not rebuild on a flag change alone: build from clean after editing.
let hotFunctions = Context.packageDirectory + "/build-support/hot-functions.txt"
let functionSections: [SwiftSetting] = [.unsafeFlags(["-Xfrontend", "-function-sections"], .when(configuration: .release))]
let orderedLink: [LinkerSetting] = [
    .unsafeFlags(["-use-ld=lld", "-Xlinker", "--symbol-ordering-file=\(hotFunctions)", "-Xlinker", "--no-warn-symbol-ordering"],
                 .when(configuration: .release))
]

let package = Package(
    name: "WebServer",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "webserver", targets: ["webserver"]),
        .executable(name: "webserver-core", targets: ["webserver-core"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
    ],
    targets: [
        .systemLibrary(
            name: "COpenSSL",
            pkgConfig: "openssl",
            providers: [.apt(["libssl-dev"])]
        ),
        .systemLibrary(
            name: "CZlib",
            pkgConfig: "zlib",
            providers: [.apt(["zlib1g-dev"])]
        ),
        .systemLibrary(
            name: "CNghttp2",
            pkgConfig: "libnghttp2",
            providers: [.apt(["libnghttp2-dev"])]
        ),
        .systemLibrary(
            name: "CBrotli",
            pkgConfig: "libbrotlienc",
            providers: [.apt(["libbrotli-dev"])]
        ),
        .systemLibrary(
            name: "CZstd",
            pkgConfig: "libzstd",
            providers: [.apt(["libzstd-dev"])]
        ),
        // libcurl's header only: the ACME process opens the library itself (Sources/CCurl/shim.h says why).
        .systemLibrary(
            name: "CCurl",
            path: "Sources/CCurl",
            providers: [.apt(["libcurl4-openssl-dev"])]
        ),
        .systemLibrary(
            name: "CCrypt",
            path: "Sources/CCrypt",
            providers: [.apt(["libcrypt-dev"])]
        ),
        .target(name: "CSystemShims"),
        .target(name: "CTicketKeys", dependencies: ["COpenSSL"]),
        // What the listener and the manager run: no Foundation, no OpenSSL, so the small executable made
        // of it (webserver-core) does not map and relocate them in those two processes (issue 20's memory
        // row). The full server links it too and can run those roles itself.
        .target(
            name: "ServerCore",
            dependencies: [
                "CSystemShims",
                .product(name: "Logging", package: "swift-log"),
            ],
            // Cross-module optimization: the worker's loop calls into this module on every request
            // (epoll, the channels, the figures for /metrics), and those calls are inlined as they were
            // when it was one module (callgrind: 2-6% more instructions per request without it).
            swiftSettings: swiftSettings + functionSections
                + [.unsafeFlags(["-enforce-exclusivity=unchecked", "-cross-module-optimization"], .when(configuration: .release))]
        ),
        .target(
            name: "Server",
            dependencies: [
                "ServerCore",
                "CSystemShims",
                "CTicketKeys",
                "COpenSSL",
                "CZlib",
                "CNghttp2",
                "CBrotli",
                "CZstd",
                "CCrypt",
                "CCurl",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
            ],
            // Release builds drop the run-time exclusivity checks: they were a third of the listener's
            // instructions per connection (callgrind). Debug builds, and so the tests, keep them.
            swiftSettings: swiftSettings + functionSections
                + [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]
        ),
        .executableTarget(
            name: "webserver",
            dependencies: [
                "Server",
                // Built with it (`swift run webserver` too): the supervisor runs its listener and manager.
                "webserver-core",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings + functionSections,
            linkerSettings: orderedLink
        ),
        // The listener and the manager, started by the supervisor from beside the `webserver` executable.
        .executableTarget(
            name: "webserver-core",
            dependencies: ["ServerCore"],
            swiftSettings: swiftSettings + functionSections,
            linkerSettings: orderedLink
        ),
        // The parser's fuzz target: libFuzzer with -DFUZZING (scripts/fuzz), else a replayer of inputs.
        .executableTarget(
            name: "webserver-fuzz",
            dependencies: ["Server"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "ServerTests",
            dependencies: ["Server", "ServerCore", "CCrypt", "COpenSSL"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "IntegrationTests",
            dependencies: ["Server", "ServerCore"],
            exclude: ["Fixtures"],
            swiftSettings: swiftSettings
        ),
    ],
    swiftLanguageModes: [.v6]
)
