use anyhow::Result;
use clap::Args;
use imagen_trainer::torch_info::TorchInfo;

#[derive(Debug, Args)]
pub struct EnvArgs {
    /// Print JSON instead of lines.
    #[arg(long)]
    json: bool,
}

pub fn run(args: EnvArgs) -> Result<()> {
    let info = TorchInfo::probe()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(());
    }
    println!("imagen {}", env!("CARGO_PKG_VERSION"));
    println!("libtorch lib:        {}", info.libtorch_lib);
    println!("CUDA available:      {}", info.cuda_available);
    println!("CUDA devices:        {}", info.cuda_device_count);
    println!("cuDNN available:     {}", info.cudnn_available);
    println!("NCCL (c10d) built:   {} (headers {})", info.nccl_compiled, info.nccl_header_version);
    println!("autocast default:    {} (imagen sets bf16)", info.cuda_autocast_default_dtype);
    println!("CPU threads:         {}", info.cpu_threads);
    Ok(())
}
