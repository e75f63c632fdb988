# temposplit overlay for the PYNQ-Z2 (xc7z020clg400-1), Vivado 2022.1 or later, batch mode.
#
# This file is the body of build/vivado/build.tcl: `python -m temposplit.hw.vivado` writes
# the tsp_* settings (from hw/regmap.py) above it and the accelerator's Verilog beside it.
#   1. package temposplit_accel.v + temposplit_accel_core.v as the IP tsp_ip_vlnv
#   2. block design: PS7 (FCLK0, M_AXI_GP0, S_AXI_HP0 64-bit), AXI DMA (simple mode,
#      64-bit streams, 26-bit length), the accelerator, an AXI interconnect for the
#      AXI-Lite registers, a SmartConnect from the DMA to HP0, the address map
#   3. synthesis, implementation, bitstream; temposplit.bit + temposplit.hwh copied out
# Arguments (-tclargs): [output folder] [jobs]

set script_dir [file dirname [file normalize [info script]]]
if {![info exists argv]} { set argv {} }
if {[llength $argv] > 0} {
    set bit_dir [file normalize [lindex $argv 0]]
} elseif {[file isdirectory [file join $script_dir .. .. bitstreams pynq-z2]]} {
    set bit_dir [file normalize [file join $script_dir .. .. bitstreams pynq-z2]]
} else {
    set bit_dir [file join $script_dir bitstream]
}
set jobs [expr {[llength $argv] > 1 ? [lindex $argv 1] : 4}]
set proj_dir [file join $script_dir project]
set ip_dir [file join $script_dir ip]

if {[package vcompare [version -short] 2022.1] < 0} {
    puts "WARNING: written for Vivado 2022.1 or later, this is [version -short]"
}

# ------------------------------------------------------------------ 1. the accelerator as IP
file delete -force $ip_dir [file join $script_dir ip_project]
create_project -force tsp_ip [file join $script_dir ip_project] -part $tsp_part
add_files -norecurse [list [file join $script_dir ${tsp_shell_name}.v] [file join $script_dir ${tsp_core_name}.v]]
set_property top $tsp_shell_name [current_fileset]
update_compile_order -fileset sources_1
ipx::package_project -root_dir $ip_dir -vendor $tsp_ip_vendor -library $tsp_ip_library \
    -taxonomy /UserIP -import_files -set_current true
set core [ipx::current_core]
set_property name $tsp_ip_name $core
set_property version $tsp_ip_version $core
set_property display_name "temposplit accelerator (requantizer, Huffman encoder, TSS)" $core
set_property description "temposplit feature-map codec kernels; registers: hw/regmap.py" $core
set_property supported_families {zynq Production} $core

# The register window: one address block on the AXI4-Lite slave (the X_INTERFACE_INFO
# attributes of the shell make the packager infer s_axil, s_axis, m_axis, aclk, aresetn).
set axil [ipx::get_bus_interfaces s_axil -of_objects $core]
if {$axil eq ""} { error "the IP packager found no s_axil interface in ${tsp_shell_name}.v" }
foreach busif {s_axis m_axis} {
    if {[ipx::get_bus_interfaces $busif -of_objects $core] eq ""} {
        error "the IP packager found no $busif interface in ${tsp_shell_name}.v"
    }
}
set mm_name [get_property slave_memory_map_ref $axil]
if {$mm_name eq ""} {
    ipx::add_memory_map s_axil $core
    set_property slave_memory_map_ref s_axil $axil
    set mm_name s_axil
}
set mm [ipx::get_memory_maps $mm_name -of_objects $core]
set blocks [ipx::get_address_blocks -of_objects $mm]
if {[llength $blocks] == 0} { set blocks [ipx::add_address_block reg0 $mm] }
set_property range $tsp_ip_block_range [lindex $blocks 0]
set_property usage register [lindex $blocks 0]
ipx::create_xgui_files $core
ipx::update_checksums $core
ipx::check_integrity $core
ipx::save_core $core
close_project

# ------------------------------------------------------------------ 2. the block design
create_project -force $tsp_overlay $proj_dir -part $tsp_part
set board [lindex [lsort [get_board_parts -quiet $tsp_board_pattern]] end]
if {$board ne ""} {
    set_property board_part $board [current_project]
    puts "board part: $board (PYNQ-Z2 preset for the PS7)"
} else {
    puts "no PYNQ-Z2 board files: the PS7 gets the minimal explicit configuration below"
}
set_property ip_repo_paths [list $ip_dir] [current_project]
update_ip_catalog -rebuild
create_bd_design $tsp_bd

# PS7: DDR and FIXED_IO external; the board preset where the board files exist.
set ps [create_bd_cell -type ip -vlnv xilinx.com:ip:processing_system7:5.5 processing_system7_0]
apply_bd_automation -rule xilinx.com:bd_rule:processing_system7 \
    -config [list make_external "FIXED_IO, DDR" apply_board_preset [expr {$board ne "" ? 1 : 0}] \
             Master Disable Slave Disable] $ps
if {$board eq ""} {
    # PYNQ-Z2: 50 MHz PS clock, 512 MB DDR3 (MT41K256M16, 16-bit bus), bank 0 3.3 V, bank 1 1.8 V.
    # PYNQ's boot files configure the PS; the overlay needs only the PL-facing settings.
    set_property -dict [list \
        CONFIG.PCW_CRYSTAL_PERIPHERAL_FREQMHZ {50} \
        CONFIG.PCW_PRESET_BANK0_VOLTAGE {LVCMOS 3.3V} \
        CONFIG.PCW_PRESET_BANK1_VOLTAGE {LVCMOS 1.8V} \
        CONFIG.PCW_UIPARAM_DDR_PARTNO {MT41K256M16 RE-125} \
        CONFIG.PCW_UIPARAM_DDR_BUS_WIDTH {16 Bit} \
    ] $ps
}
set_property -dict [list \
    CONFIG.PCW_FPGA0_PERIPHERAL_FREQMHZ $tsp_fclk_mhz \
    CONFIG.PCW_EN_CLK0_PORT {1} \
    CONFIG.PCW_EN_RST0_PORT {1} \
    CONFIG.PCW_USE_M_AXI_GP0 {1} \
    CONFIG.PCW_USE_S_AXI_HP0 {1} \
    CONFIG.PCW_S_AXI_HP0_DATA_WIDTH $tsp_hp_width \
] $ps

# AXI DMA: simple (register) mode, both channels, 64-bit, the length register widened.
set dma [create_bd_cell -type ip -vlnv xilinx.com:ip:axi_dma:7.1 $tsp_dma_instance]
set_property -dict [list \
    CONFIG.c_include_sg {0} \
    CONFIG.c_sg_length_width $tsp_dma_length_width \
    CONFIG.c_include_mm2s {1} \
    CONFIG.c_include_s2mm {1} \
    CONFIG.c_m_axi_mm2s_data_width $tsp_hp_width \
    CONFIG.c_m_axis_mm2s_tdata_width $tsp_stream_width \
    CONFIG.c_m_axi_s2mm_data_width $tsp_hp_width \
    CONFIG.c_s_axis_s2mm_tdata_width $tsp_stream_width \
    CONFIG.c_mm2s_burst_size {16} \
    CONFIG.c_s2mm_burst_size {16} \
] $dma

set accel [create_bd_cell -type ip -vlnv $tsp_ip_vlnv $tsp_accel_instance]
set rst [create_bd_cell -type ip -vlnv xilinx.com:ip:proc_sys_reset:5.0 rst_ps7_0_fclk0]
set periph [create_bd_cell -type ip -vlnv xilinx.com:ip:axi_interconnect:2.1 ps7_0_axi_periph]
set_property -dict [list CONFIG.NUM_SI {1} CONFIG.NUM_MI {2}] $periph
set smc [create_bd_cell -type ip -vlnv xilinx.com:ip:smartconnect:1.0 axi_smc]
set_property -dict [list CONFIG.NUM_SI {2} CONFIG.NUM_MI {1}] $smc

# Control: GP0 -> interconnect -> the DMA's and the accelerator's registers.
connect_bd_intf_net [get_bd_intf_pins processing_system7_0/M_AXI_GP0] [get_bd_intf_pins ps7_0_axi_periph/S00_AXI]
connect_bd_intf_net [get_bd_intf_pins ps7_0_axi_periph/M00_AXI] [get_bd_intf_pins $tsp_dma_instance/S_AXI_LITE]
connect_bd_intf_net [get_bd_intf_pins ps7_0_axi_periph/M01_AXI] [get_bd_intf_pins $tsp_accel_instance/s_axil]
# Data: DDR <- HP0 <- SmartConnect <- DMA <-> accelerator streams.
connect_bd_intf_net [get_bd_intf_pins $tsp_dma_instance/M_AXI_MM2S] [get_bd_intf_pins axi_smc/S00_AXI]
connect_bd_intf_net [get_bd_intf_pins $tsp_dma_instance/M_AXI_S2MM] [get_bd_intf_pins axi_smc/S01_AXI]
connect_bd_intf_net [get_bd_intf_pins axi_smc/M00_AXI] [get_bd_intf_pins processing_system7_0/S_AXI_HP0]
connect_bd_intf_net [get_bd_intf_pins $tsp_dma_instance/M_AXIS_MM2S] [get_bd_intf_pins $tsp_accel_instance/s_axis]
connect_bd_intf_net [get_bd_intf_pins $tsp_accel_instance/m_axis] [get_bd_intf_pins $tsp_dma_instance/S_AXIS_S2MM]

# One clock (FCLK0) and one reset for everything.
connect_bd_net [get_bd_pins processing_system7_0/FCLK_CLK0] \
    [get_bd_pins processing_system7_0/M_AXI_GP0_ACLK] \
    [get_bd_pins processing_system7_0/S_AXI_HP0_ACLK] \
    [get_bd_pins rst_ps7_0_fclk0/slowest_sync_clk] \
    [get_bd_pins ps7_0_axi_periph/ACLK] \
    [get_bd_pins ps7_0_axi_periph/S00_ACLK] \
    [get_bd_pins ps7_0_axi_periph/M00_ACLK] \
    [get_bd_pins ps7_0_axi_periph/M01_ACLK] \
    [get_bd_pins axi_smc/aclk] \
    [get_bd_pins $tsp_dma_instance/s_axi_lite_aclk] \
    [get_bd_pins $tsp_dma_instance/m_axi_mm2s_aclk] \
    [get_bd_pins $tsp_dma_instance/m_axi_s2mm_aclk] \
    [get_bd_pins $tsp_accel_instance/aclk]
connect_bd_net [get_bd_pins processing_system7_0/FCLK_RESET0_N] [get_bd_pins rst_ps7_0_fclk0/ext_reset_in]
connect_bd_net [get_bd_pins rst_ps7_0_fclk0/interconnect_aresetn] [get_bd_pins ps7_0_axi_periph/ARESETN]
connect_bd_net [get_bd_pins rst_ps7_0_fclk0/peripheral_aresetn] \
    [get_bd_pins ps7_0_axi_periph/S00_ARESETN] \
    [get_bd_pins ps7_0_axi_periph/M00_ARESETN] \
    [get_bd_pins ps7_0_axi_periph/M01_ARESETN] \
    [get_bd_pins axi_smc/aresetn] \
    [get_bd_pins $tsp_dma_instance/axi_resetn] \
    [get_bd_pins $tsp_accel_instance/aresetn]

# Address map (from hw/regmap.py): the registers on GP0, DDR for both DMA channels.
set ps_data [get_bd_addr_spaces processing_system7_0/Data]
assign_bd_address -offset $tsp_dma_base -range $tsp_dma_range -target_address_space $ps_data \
    [get_bd_addr_segs $tsp_dma_instance/S_AXI_LITE/Reg] -force
set accel_segs [get_bd_addr_segs $tsp_accel_instance/s_axil/*]
if {[llength $accel_segs] != 1} { error "expected one address segment on $tsp_accel_instance/s_axil, got: $accel_segs" }
assign_bd_address -offset $tsp_accel_base -range $tsp_accel_range -target_address_space $ps_data $accel_segs -force
foreach space {Data_MM2S Data_S2MM} {
    assign_bd_address -offset 0x00000000 -range $tsp_ddr_range \
        -target_address_space [get_bd_addr_spaces $tsp_dma_instance/$space] \
        [get_bd_addr_segs processing_system7_0/S_AXI_HP0/HP0_DDR_LOWOCM] -force
}
# Fail here, not on the board, if Vivado moved anything.
foreach {seg_pattern want} [list "*${tsp_accel_instance}*" $tsp_accel_base "*${tsp_dma_instance}*" $tsp_dma_base] {
    set seg [get_bd_addr_segs -of_objects $ps_data -filter "NAME =~ $seg_pattern"]
    if {[llength $seg] != 1} { error "address map: expected one segment $seg_pattern in $ps_data, got: $seg" }
    if {[get_property OFFSET $seg] != $want} {
        error "address map: $seg is at [get_property OFFSET $seg], the register map says $want"
    }
}

validate_bd_design
regenerate_bd_layout
save_bd_design

# ------------------------------------------------------------------ 3. bitstream
set bd_file [get_files ${tsp_bd}.bd]
generate_target all $bd_file
set wrapper [make_wrapper -files $bd_file -top]
if {$wrapper eq "" || ![file exists $wrapper]} {
    set wrapper [lindex [glob -nocomplain \
        [file join $proj_dir ${tsp_overlay}.gen sources_1 bd $tsp_bd hdl ${tsp_bd}_wrapper.v] \
        [file join $proj_dir ${tsp_overlay}.srcs sources_1 bd $tsp_bd hdl ${tsp_bd}_wrapper.v]] 0]
}
add_files -norecurse $wrapper
set_property top ${tsp_bd}_wrapper [current_fileset]
update_compile_order -fileset sources_1

launch_runs synth_1 -jobs $jobs
wait_on_run synth_1
if {[get_property PROGRESS [get_runs synth_1]] ne "100%"} { error "synthesis failed: see $proj_dir" }
launch_runs impl_1 -to_step write_bitstream -jobs $jobs
wait_on_run impl_1
if {[get_property PROGRESS [get_runs impl_1]] ne "100%"} { error "implementation failed: see $proj_dir" }

open_run impl_1
file mkdir $bit_dir
report_timing_summary -file [file join $script_dir timing_summary.txt]
report_utilization -file [file join $script_dir utilization.txt]
set wns [get_property STATS.WNS [get_runs impl_1]]
if {$wns < 0 && ![info exists ::env(TSP_ALLOW_NEGATIVE_SLACK)]} {
    error "timing not met at $tsp_fclk_mhz MHz (WNS $wns ns); see timing_summary.txt (set TSP_ALLOW_NEGATIVE_SLACK=1 to copy it anyway)"
}

set bit [file join [get_property DIRECTORY [get_runs impl_1]] ${tsp_bd}_wrapper.bit]
set hwh [lindex [glob -nocomplain \
    [file join $proj_dir ${tsp_overlay}.gen sources_1 bd $tsp_bd hw_handoff ${tsp_bd}.hwh] \
    [file join $proj_dir ${tsp_overlay}.srcs sources_1 bd $tsp_bd hw_handoff ${tsp_bd}.hwh]] 0]
if {![file exists $bit] || $hwh eq ""} { error "no bitstream or .hwh: bit=$bit hwh=$hwh" }
file copy -force $bit [file join $bit_dir ${tsp_overlay}.bit]
file copy -force $hwh [file join $bit_dir ${tsp_overlay}.hwh]
file copy -force [file join $script_dir timing_summary.txt] [file join $bit_dir timing_summary.txt]
file copy -force [file join $script_dir utilization.txt] [file join $bit_dir utilization.txt]
puts "temposplit overlay: [file join $bit_dir ${tsp_overlay}.bit] and .hwh (WNS $wns ns at $tsp_fclk_mhz MHz)"
