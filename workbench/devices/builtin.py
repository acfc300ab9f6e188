"""Built-in device profiles, with the public documents their figures come from.

Spec-sheet figures (chip, cores, clock, RAM, flash) are cited per device. Peak MAC
rates and, where no sustained figure is published, memory bandwidth are class
estimates worked out from the core's documented SIMD width and clock: each profile
lists them in ``estimated`` and its ``notes`` show the arithmetic. They feed only the
roofline *lower bound* of latency, which is always labelled an estimate.
"""

from __future__ import annotations

from workbench.devices.profile import DeviceProfile

__all__ = ["BUILTIN_DEVICES"]

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

BUILTIN_DEVICES: tuple[DeviceProfile, ...] = (
    # Sources: "The Official Raspberry Pi Beginner's Guide", Appendix F "Raspberry Pi
    # specifications" (BCM2711, 4x Cortex-A72 at 1.5 GHz, LPDDR4-3200, microSD);
    # Wikipedia "Raspberry Pi 4" (C0 stepping boards run at 1.8 GHz);
    # sci-pi.org.uk "Stream" benchmark page (STREAM copy on a Pi 4: 5527 MB/s).
    DeviceProfile(
        name="raspberry-pi-4",
        kind="linux-board",
        cpu="Broadcom BCM2711, 4x Arm Cortex-A72 (ARMv8.0-A)",
        cpu_features=("neon",),  # ARMv8.0: no int8 dot product (no SDOT/UDOT)
        cores=4,
        clock_mhz=1500.0,
        ram_bytes=4 * GiB,
        storage_bytes=32 * 10**9,
        memory_bandwidth_gbps=5.5,
        peak_fp32_gmacs=48.0,
        peak_int8_gmacs=96.0,
        runtimes=("onnxruntime", "litert"),
        estimated=("storage_bytes", "peak_fp32_gmacs", "peak_int8_gmacs"),
        source=(
            "The Official Raspberry Pi Beginner's Guide, Appendix F (Raspberry Pi 4 Model B "
            "specifications); sci-pi.org.uk 'Stream' (STREAM on a Pi 4)"
        ),
        notes=(
            "Raspberry Pi 4 Model B, 4 GB. Clock 1.5 GHz (B0 stepping; C0 boards from 2021 "
            "run 1.8 GHz). Bandwidth is the measured STREAM copy rate, not the 12.8 GB/s "
            "LPDDR4 peak. Storage: a 32 GB microSD card (class estimate). Peak MACs (class "
            "estimate): 2 NEON FMA pipes x 4 fp32 lanes = 8 fp32 MAC/cycle/core, about "
            "16 int8 MAC/cycle/core with widening multiplies (no dot product), x 4 cores x "
            "1.5 GHz."
        ),
    ),
    # Sources: etechnophiles.com "Raspberry Pi Zero 2 W board layout, pinout, specs"
    # and pi-supply "Raspberry Pi Zero 2 W released" (RP3A0 / BCM2710A1, 4x Cortex-A53
    # at 1 GHz, 512 MB LPDDR2 at 450 MHz, microSD).
    DeviceProfile(
        name="raspberry-pi-zero-2w",
        kind="linux-board",
        cpu="Raspberry Pi RP3A0 (Broadcom BCM2710A1), 4x Arm Cortex-A53 (ARMv8.0-A)",
        cpu_features=("neon",),
        cores=4,
        clock_mhz=1000.0,
        ram_bytes=512 * MiB,
        storage_bytes=16 * 10**9,
        memory_bandwidth_gbps=2.0,
        peak_fp32_gmacs=8.0,
        peak_int8_gmacs=32.0,
        runtimes=("onnxruntime", "litert"),
        estimated=("storage_bytes", "memory_bandwidth_gbps", "peak_fp32_gmacs", "peak_int8_gmacs"),
        source=(
            "etechnophiles.com 'RPI Zero 2W board layout, pinout, specs'; pi-supply.com "
            "'Raspberry Pi Zero 2 W released'"
        ),
        notes=(
            "512 MB LPDDR2 (32-bit, 450 MHz: 3.6 GB/s peak; 2 GB/s sustained is a class "
            "estimate). Storage: a 16 GB microSD card (class estimate). Peak MACs (class "
            "estimate): the A53's 64-bit NEON path gives 2 fp32 and about 8 int8 MAC/cycle/core, "
            "x 4 cores x 1 GHz."
        ),
    ),
    # Sources: wccftech "Snapdragon 778G 5G announced" (4x Cortex-A78 up to 2.4 GHz +
    # 4x Cortex-A55, LPDDR5 at 3200 MHz, up to 16 GB); explica.co (1x A78 at 2.4 GHz +
    # 3x A78 at 2.2 GHz + 4x A55 at 1.9 GHz).
    DeviceProfile(
        name="android-midrange",
        kind="phone",
        cpu="mid-range Android SoC class (Snapdragon 778G: 4x Cortex-A78 + 4x Cortex-A55)",
        cpu_features=("neon", "dotprod", "fp16"),
        cores=4,
        clock_mhz=2400.0,
        ram_bytes=6 * GiB,
        available_memory_bytes=3 * GiB,
        storage_bytes=128 * 10**9,
        memory_bandwidth_gbps=25.0,
        peak_fp32_gmacs=72.0,
        peak_int8_gmacs=288.0,
        runtimes=("onnxruntime", "litert"),
        estimated=(
            "ram_bytes",
            "available_memory_bytes",
            "storage_bytes",
            "memory_bandwidth_gbps",
            "peak_fp32_gmacs",
            "peak_int8_gmacs",
        ),
        source=(
            "wccftech 'Snapdragon 778G 5G announced by Qualcomm, made for mid-range 5G phones'; "
            "explica.co 'Qualcomm SoC for upper midrange'"
        ),
        notes=(
            "A class, not one phone: a Snapdragon 778G-class SoC with 6 GB RAM (half of it "
            "left to one app while the OS and others run) and 128 GB storage. Cores: the four "
            "Cortex-A78 big cores a model's threads run on. Bandwidth: LPDDR5-6400 x 64 bit = "
            "51 GB/s peak, about half sustained by the CPU (class estimate). Peak MACs (class "
            "estimate): 2 NEON pipes give 8 fp32 MAC/cycle or 32 int8 MAC/cycle with SDOT, x "
            "(2.4 + 3 x 2.2) GHz over the four big cores."
        ),
    ),
    # Sources: 0xhenry.dev "STM32 Architecture Basics - Cortex-M7, Memory Map, Bus
    # Architecture" (STM32H743: Cortex-M7 at 480 MHz, 2 MB flash, 1 MB RAM of which
    # 512 KB AXI SRAM is the largest block, DSP SIMD, single- and double-precision FPU).
    DeviceProfile(
        name="cortex-m7",
        kind="microcontroller",
        cpu="Arm Cortex-M7 (STM32H743 class), ARMv7E-M with DSP extension and FPU",
        cpu_features=("dsp", "fpu"),
        cores=1,
        clock_mhz=480.0,
        ram_bytes=1 * MiB,
        storage_bytes=2 * MiB,
        memory_bandwidth_gbps=1.9,
        peak_fp32_gmacs=0.48,
        peak_int8_gmacs=0.96,
        runtimes=("tflite-micro",),
        estimated=("memory_bandwidth_gbps", "peak_fp32_gmacs", "peak_int8_gmacs"),
        source="0xhenry.dev 'STM32 Architecture Basics - Cortex-M7, Memory Map, Bus Architecture' (STM32H743)",
        notes=(
            "1 MB SRAM in several blocks (the largest, AXI SRAM, is 512 KB), 2 MB flash. "
            "Bandwidth: the 64-bit AXI bus at 240 MHz (class estimate). Peak MACs (class "
            "estimate): SMLAD does 2 16-bit MACs per cycle (CMSIS-NN int8), the FPU 1 fp32 "
            "FMA per cycle, at 480 MHz."
        ),
    ),
    # Sources: ferrite-sdk "nRF52840" target page (Cortex-M4F, 256 KB SRAM, 1 MB flash);
    # Nordic nRF52840 Product Specification (64 MHz). The guide's 256 KB case.
    DeviceProfile(
        name="cortex-m4",
        kind="microcontroller",
        cpu="Arm Cortex-M4F (nRF52840 class), ARMv7E-M with DSP extension and FPU",
        cpu_features=("dsp", "fpu"),
        cores=1,
        clock_mhz=64.0,
        ram_bytes=256 * KiB,
        storage_bytes=1 * MiB,
        memory_bandwidth_gbps=0.256,
        peak_fp32_gmacs=0.064,
        peak_int8_gmacs=0.128,
        runtimes=("tflite-micro",),
        estimated=("memory_bandwidth_gbps", "peak_fp32_gmacs", "peak_int8_gmacs"),
        source="ferrite-sdk docs 'nRF52840' target page; Nordic Semiconductor nRF52840 Product Specification",
        notes=(
            "256 KB SRAM, 1 MB flash, 64 MHz (the board of the Arduino Nano 33 BLE Sense). "
            "Bandwidth: one 32-bit access per cycle (class estimate). Peak MACs (class "
            "estimate): SMLAD 2 int8 MAC/cycle via CMSIS-NN, at most 1 fp32 FMA/cycle."
        ),
    ),
    # Sources: Espressif "ESP32-S3 Series Datasheet" / "ESP32-S3 Technical Reference
    # Manual" (2x Xtensa LX7 up to 240 MHz, 512 KB SRAM, external SPI flash, vector
    # instructions for neural networks); jschwefel/esp32-feature-matrix.
    DeviceProfile(
        name="esp32-s3",
        kind="microcontroller",
        cpu="Espressif ESP32-S3, 2x Xtensa LX7 with 128-bit vector (PIE) instructions",
        cpu_features=("simd128",),
        cores=2,
        clock_mhz=240.0,
        ram_bytes=512 * KiB,
        storage_bytes=8 * MiB,
        memory_bandwidth_gbps=3.8,
        peak_fp32_gmacs=0.48,
        peak_int8_gmacs=7.68,
        runtimes=("tflite-micro",),
        estimated=("storage_bytes", "memory_bandwidth_gbps", "peak_fp32_gmacs", "peak_int8_gmacs"),
        source="Espressif 'ESP32-S3 Series Datasheet' and 'ESP32-S3 Technical Reference Manual'",
        notes=(
            "512 KB internal SRAM (no PSRAM assumed), 8 MB flash (an ESP32-S3-WROOM-1-N8 "
            "module; flash is external and varies). Bandwidth: one 128-bit load per cycle "
            "per core (class estimate). Peak MACs (class estimate): 16 int8 MAC/cycle per core "
            "with the vector MAC instructions, 1 fp32 FMA/cycle, x 2 cores x 240 MHz."
        ),
    ),
)
