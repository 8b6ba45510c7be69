module corral-load

go 1.19
