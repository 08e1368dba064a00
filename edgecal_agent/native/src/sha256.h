// SHA-256 (FIPS 180-4) and CRC-32 (the zip polynomial), our own small implementations.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace edgecal {

class Sha256 {
public:
    Sha256();
    void update(const void* data, size_t n);
    // the lowercase hex digest; the object is spent afterwards
    std::string hexdigest();

private:
    void block(const uint8_t* p);
    // n whole blocks: the CPU's SHA instructions where it has them (x86), else block()
    void blocks(const uint8_t* p, size_t n);
    uint32_t h_[8];
    uint8_t buf_[64];
    size_t fill_ = 0;
    uint64_t total_ = 0;
};

// CRC-32 of the zip format (reflected 0xEDB88320), continued from crc (0 to start).
uint32_t crc32_update(uint32_t crc, const void* data, size_t n);

}  // namespace edgecal
