from ftpipe.cli import main

main()
